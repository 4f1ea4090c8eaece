"""HTML pages of the operator UI, from the dicts of `queries` (plain Python, no Airflow)."""

from __future__ import annotations

import datetime as dt
from html import escape
from urllib.parse import quote

from mailshift.progress.charts import bar, line_chart
from mailshift.rules import states as rs

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:16px;color:#222;font-size:14px}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0} th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;
vertical-align:top} th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
nav a{margin-right:14px} .muted{color:#777} .ok{color:#1a7f37;font-weight:600} .bad{color:#c62828;font-weight:600}
.warn{color:#b26a00;font-weight:600} .cards{display:flex;gap:10px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:20px} form{margin:8px 0}
.state{padding:1px 6px;border-radius:3px;color:#fff;font-weight:600}
.s-planned{background:#9e9e9e}.s-copying{background:#1e88e5}.s-copied{background:#8e24aa}
.s-proven{background:#2e7d32}.s-cut_over{background:#004d40}.s-empty{background:#e0e0e0;color:#555}
"""


def _e(v) -> str:
    if v is None:
        return '<span class="muted">-</span>'
    if isinstance(v, dt.datetime):
        return escape(v.strftime("%Y-%m-%d %H:%M:%S %Z").strip())
    return escape(str(v))


def _n(v) -> str:
    return f"{int(v or 0):,}"


def human_bytes(v) -> str:
    v = float(v or 0)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(v) < 1000 or unit == "PB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000
    return f"{v:.1f} PB"


def _pct(a, b) -> str:
    return f"{100.0 * (a or 0) / b:.1f} %" if b else "-"


def airflow_root(base: str) -> str:
    """Airflow's own root: the parent of the plugin's mount point (`/mailshift` -> `/`)."""
    return base.rstrip("/").rsplit("/", 1)[0] + "/"


#: Airflow shows our pages in an iframe sandboxed WITHOUT allow-top-navigation, so a link to an
#: Airflow page (target=_top: a DAG run, a task log, Airflow's home) cannot navigate the top window.
#: The frame is same-origin (allow-same-origin), so the link is handed to Airflow's own router
#: instead: push the URL on the top window's history and tell it (popstate), as the router itself does.
TOP_LINKS_JS = """<script>
document.addEventListener('click', function (ev) {
  var a = ev.target.closest && ev.target.closest('a[target=_top]');
  if (!a || window.top === window) return;
  try {
    var top = window.top, url = new URL(a.href, location.href);
    if (url.origin !== top.location.origin) return;
    ev.preventDefault();
    var idx = ((top.history.state || {}).idx || 0) + 1;
    top.history.pushState({usr: null, key: Math.random().toString(36).slice(2, 10), idx: idx}, '',
                          url.pathname + url.search + url.hash);
    top.dispatchEvent(new PopStateEvent('popstate', {state: top.history.state}));
  } catch (e) { /* another origin: leave it to the browser */ }
});
</script>"""


def page(title: str, body: str, base: str, user: str | None) -> str:
    who = f'<span class="muted">signed in as {escape(user)}</span>' if user else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<style>{CSS}</style></head><body><nav id="mailshift-nav"><a href="{base}/">Overview</a>'
            f'<a href="{base}/map">Building map</a><a href="{base}/domains">Domains</a>'
            f'<a href="{base}/lookup">Household lookup</a>'
            f'<a id="airflow-home" target="_top" href="{airflow_root(base)}">Airflow</a>{who}</nav><hr>{body}'
            f'{TOP_LINKS_JS}</body></html>')


#: the counts every level shows (overview, wave, domain, building): header, key, CSS class when > 0
COUNTS = (("refused msgs", "messages_refused", "bad"), ("altered msgs", "messages_altered", "bad"),
          ("waived mailboxes", "mailboxes_waived", "warn"), ("open exceptions", "open_exceptions", "bad"))


def counts_head() -> str:
    return "".join(f"<th>{h}</th>" for h, _k, _c in COUNTS)


def counts_cells(g: dict) -> str:
    """One cell per count; a non-zero count is coloured (refused, altered, exceptions: red)."""
    return "".join(f"<td class='n {cls if g.get(k) else ''}' data-count='{k}'>{_n(g.get(k))}</td>"
                   for _h, k, cls in COUNTS)


def state_badge(state: str | None) -> str:
    """A building / wave / domain state (rules.states vocabulary) as a coloured label."""
    return f"<span class='state s-{escape(state or '')}'>{_e(state)}</span>"


def _state_class(state: str | None) -> str:
    """CSS class of a proof state (rules.states.PROOF_STATES)."""
    return {rs.PROVEN: "ok", rs.WAIVED: "ok", rs.NOT_PROVEN: "warn"}.get(state or "", "muted")


def computing_html(ov: dict, base: str, user: str | None = None, title: str = "Migration progress") -> str:
    """Before the first summary exists no figure is shown: zeros would read as 'nothing copied'
    (and every building of the map as empty)."""
    body = (f"<h1>{escape(title)}</h1><p id='computing' class='warn'>computing the first summary of the "
            f"ledger (started {_e(ov['as_of'])}); figures appear once it is done. This page refreshes itself.</p>"
            "<meta http-equiv='refresh' content='10'>")
    return page(f"mailshift: {title} (computing)", body, base, user)


def _throughput_card(tp: dict) -> str:
    """'throughput now' only while a pass runs; otherwise say that nothing is copying."""
    if not tp["running_passes"]:
        return ('<div class="card" id="card-throughput">throughput now<b>no pass running</b>'
                f'last {tp["window_minutes"]} min: {human_bytes(tp["bytes"])} copied</div>')
    return (f'<div class="card" id="card-throughput">throughput now<b>{human_bytes(tp["bytes_per_s"])}/s</b>'
            f'{tp["messages_per_s"]:.1f} msg/s over {tp["window_minutes"]} min; {_n(tp["running_passes"])} '
            f'passes running</div>')


def overview_html(ov: dict, base: str, user: str | None = None) -> str:
    if ov.get("summary_refreshed_at") is None:
        return computing_html(ov, base, user)
    t = ov["totals"]
    tp = ov["throughput"]
    states = list(t["buildings_by_state"].keys())
    p = [f"<h1>Migration progress</h1><p class='muted'>as of {_e(ov['as_of'])}; summaries refreshed "
         f"{_e(ov['summary_refreshed_at'])}</p>"]
    p.append('<div class="cards">'
             f'<div class="card" id="card-mailboxes">mailboxes copied<b>{_n(t["mailboxes_copied"])} / '
             f'{_n(t["mailboxes"])}</b>{bar(t["mailboxes_copied"] / t["mailboxes"] if t["mailboxes"] else 0)}</div>'
             f'<div class="card" id="card-messages">messages copied<b>{_n(t["messages_copied"])} / '
             f'{_n(t["messages_total"])}</b>{_pct(t["messages_copied"], t["messages_total"])}</div>'
             f'<div class="card" id="card-bytes">bytes copied<b>{human_bytes(t["bytes_copied"])} / '
             f'{human_bytes(t["bytes_total"])}</b>{_pct(t["bytes_copied"], t["bytes_total"])}</div>'
             + _throughput_card(tp) +
             f'<div class="card" id="card-unproven">unproven mailboxes<b class="{"bad" if t["unproven_mailboxes"] else "ok"}">'
             f'{_n(t["unproven_mailboxes"])}</b>{_n(t["mailboxes_failed"])} with a failed verification; '
             f'{_n(t["mailboxes_waived"])} proven by waivers</div>'
             f'<div class="card" id="card-exceptions">open exceptions<b class="{"bad" if t["open_exceptions"] else "ok"}">'
             f'{_n(t["open_exceptions"])}</b>{_n(t["open_blocking_exceptions"])} blocking</div>'
             f'<div class="card" id="card-problems">refused / altered messages<b class="'
             f'{"bad" if t["messages_refused"] or t["messages_altered"] else "ok"}">{_n(t["messages_refused"])} / '
             f'{_n(t["messages_altered"])}</b>{_n(t["mailboxes_waived"])} mailboxes waived</div></div>')
    p.append(f"<p>state of the whole migration: {state_badge(t['status'])} "
             f"<a id='link-map' href='{base}/map'>building map</a> · <a href='{base}/domains'>domains</a></p>")
    p.append("<h2>Waves</h2><table id='waves'><tr><th>wave</th><th>state</th><th>buildings</th>"
             + "".join(f"<th>{escape(s)}</th>" for s in states)
             + "<th>mailboxes copied</th><th>proven (waived)</th><th>unproven</th>" + counts_head()
             + "<th>messages copied</th><th>bytes copied</th><th></th><th>rate</th><th>ETA</th></tr>")
    for w in ov["waves"]:
        frac = w["bytes_copied"] / w["bytes_total"] if w["bytes_total"] else 0
        wid = "unassigned" if w["wave"] is None else w["wave"]
        name = _e(w["name"]) if w["wave"] is None else f"<a href='{base}/wave/{w['wave']}'>{_e(w['name'])}</a>"
        p.append(f"<tr data-wave='{wid}'><td>{name}</td><td class='wave-state'>{state_badge(w['status'])}</td>"
                 f"<td class=n>{_n(w['buildings'])}</td>"
                 + "".join(f"<td class=n>{_n(w['buildings_by_state'][s])}</td>" for s in states)
                 + f"<td class=n>{_n(w['mailboxes_copied'])} / {_n(w['mailboxes'])}</td>"
                 f"<td class=n>{_n(w['mailboxes_proven'])} ({_n(w['mailboxes_waived'])})</td>"
                 f"<td class=n>{_n(w['unproven_mailboxes'])}</td>" + counts_cells(w)
                 + f"<td class=n>{_n(w['messages_copied'])} / {_n(w['messages_total'])}</td>"
                 f"<td class=n>{human_bytes(w['bytes_copied'])} / {human_bytes(w['bytes_total'])}</td>"
                 f"<td>{bar(frac)} {_pct(w['bytes_copied'], w['bytes_total'])}</td>"
                 f"<td class=n>{human_bytes(w['bytes_per_s']) + '/s' if w['bytes_per_s'] else '-'}</td>"
                 f"<td>{_e(w['eta'])} <span class=muted>{_e(w['eta_note'])}</span></td></tr>")
    p.append("</table>")

    def fmt_time(x):
        return dt.datetime.fromtimestamp(x, dt.UTC).strftime("%m-%d %H:%M")

    series = []
    for w in ov["waves"]:
        if w["series"] and w["bytes_total"]:
            series.append((w["name"], [(s["at"].timestamp(), 100.0 * s["bytes"] / w["bytes_total"])
                                       for s in w["series"]]))
    p.append("<h2>Progress over time per wave</h2>")
    p.append(line_chart(series[:10], title="bytes copied, % of the wave", y_label="%", y_max=100.0,
                        x_fmt=fmt_time, chart_id="chart-progress"))
    hist = [(h["at"].timestamp(), h["bytes_per_s"] / 1e6) for h in tp["history"]]
    p.append(line_chart([("all waves", hist)], title="throughput (MB/s between samples)", y_label="MB/s",
                        x_fmt=fmt_time, y_fmt=lambda v: f"{v:.1f}", chart_id="chart-throughput"))
    p.append(f"<h2>Buildings</h2><form action='{base}/building' method='get'><label>building ID "
             f"<input name='id' size=12></label> <button>open</button></form>"
             f"<p><a href='{base}/map'>building map</a> · <a href='{base}/buildings'>all buildings by state</a></p>")
    return page("mailshift: migration progress", "".join(p), base, user)


def buildings_table(rows: list[dict], base: str, table_id: str = "buildings") -> str:
    """Buildings with their state and the counts (wave, domain and 'all buildings' pages)."""
    p = [f"<table id='{table_id}'><tr><th>building</th><th>name</th><th>wave</th><th>domain</th><th>state</th>"
         f"<th>mailboxes copied</th><th>proven</th>{counts_head()}<th>bytes copied</th></tr>"]
    for r in rows:
        p.append(f"<tr data-building='{escape(r['id'])}'><td><a href='{base}/building/{quote(r['id'])}'>{_e(r['id'])}</a>"
                 f"</td><td>{_e(r['name'])}</td><td>{_e(r['wave_id'])}</td><td>{_e(r['domain'])}</td>"
                 f"<td>{state_badge(r['state'])}</td>"
                 f"<td class=n>{_n(r['mailboxes_copied'])} / {_n(r['mailboxes'])}</td>"
                 f"<td class=n>{_n(r['mailboxes_proven'])}</td>{counts_cells(r)}"
                 f"<td class=n>{human_bytes(r['bytes_copied'])}</td></tr>")
    p.append("</table>")
    return "".join(p)


def buildings_html(rows: list[dict], base: str, user: str | None = None, state: str | None = None) -> str:
    body = (f"<h1>Buildings{(' in state ' + escape(state)) if state else ''}</h1>"
            f"<p><a href='{base}/map'>as a map</a></p>" + buildings_table(rows, base))
    return page("mailshift: buildings", body, base, user)


def _task_link(root: str, run: dict, t: dict) -> str:
    href = f"{root}dags/{quote(run['dag_id'])}/runs/{quote(run['run_id'])}/tasks/{quote(t['task_id'])}"
    label = t["task_id"]
    if t.get("map_index") is not None and t["map_index"] >= 0:
        href += f"/mapped/{t['map_index']}"
        label += f"[{t['map_index']}]"
    return (f"<a class='task-log' target='_top' href='{href}'>{escape(label)}</a> "
            f"<span class='muted'>{_e(t.get('state'))}</span>")


def dag_runs_html(dag_runs: list[dict] | None, base: str) -> str:
    """The Airflow runs of a building / wave / domain, each linked to its run page, with links to
    the logs of the tasks of the latest run that did not succeed (opened in the top window: our
    pages sit in Airflow's iframe)."""
    root = airflow_root(base)
    p = ["<h2>DAG runs</h2>"]
    if dag_runs is None:
        return p[0] + "<p class=muted>not available</p>"
    if not dag_runs:
        return p[0] + "<p class=muted id='no-dag-runs'>no runs</p>"
    p.append("<table id='dag-runs'><tr><th>DAG</th><th>run</th><th>state</th><th>started</th><th>ended</th>"
             "<th>tasks to look at (logs)</th></tr>")
    for r in dag_runs:
        link = f"{root}dags/{quote(r['dag_id'])}/runs/{quote(r['run_id'])}"
        tasks = "<br>".join(_task_link(root, r, t) for t in r.get("tasks") or [])
        p.append(f"<tr data-dag='{escape(r['dag_id'])}'><td><a target='_top' href='{root}dags/{quote(r['dag_id'])}'>"
                 f"{_e(r['dag_id'])}</a></td><td><a class='dag-run' target='_top' href='{link}'>{_e(r['run_id'])}</a></td>"
                 f"<td>{_e(r['state'])}</td><td>{_e(r['start_date'])}</td><td>{_e(r['end_date'])}</td>"
                 f"<td>{tasks}</td></tr>")
    p.append("</table>")
    return "".join(p)


def building_html(bp: dict, dag_runs: list[dict] | None, base: str, user: str | None = None) -> str:
    b = bp["building"]
    bid = b["id"]
    p = [f"<h1>Building {_e(bid)} <span class=muted>{_e(b['name'])}</span></h1>"
         f"<p>domain <a href='{base}/domain/{quote(b['domain'])}'>{_e(b['domain'])}</a>, source system "
         f"{_e(b['source_system'])}, wave "
         + (f"<a href='{base}/wave/{b['wave_id']}'>{_e(b['wave_id'])}</a>" if b["wave_id"] is not None else _e(None))
         + f", state <b id='building-state'>{state_badge(b['state'])}</b></p>"
         f"<table id='building-counts'><tr>{counts_head()}</tr><tr>{counts_cells(b)}</tr></table>"
         f"<p id='building-summary'>mailboxes copied {_n(b['mailboxes_copied'])} / {_n(b['mailboxes'])}, "
         f"proven {_n(b['mailboxes_proven'])} ({_n(b['mailboxes_waived'])} by waivers), "
         f"failed verification {_n(b['mailboxes_failed'])}; "
         f"messages copied {_n(b['messages_copied'])} ({human_bytes(b['bytes_copied'])}), "
         f"not settled {_n(b['messages_unsettled'])}</p>"]
    if bp["report"]:
        p.append(f"<p><a id='proof-report' href='{base}/report/{quote(bid)}'>proof report (latest verification)"
                 f"</a></p>")
    else:
        p.append("<p class=muted id='proof-report-missing'>no proof report yet</p>")
    p.append("<h2>Mailboxes</h2><table id='mailboxes'><tr><th>address</th><th>household</th><th>protocol</th>"
             "<th>messages copied</th><th>bytes</th><th>not settled</th><th>last pass</th><th>finished</th>"
             "<th>proof</th><th>proven at</th><th>waivers</th><th>open exceptions</th></tr>")
    for m in bp["mailboxes"]:
        uns = int(m["n_intent"] or 0) + int(m["n_refused"] or 0) + int(m["n_failed"] or 0)
        why = "; ".join(m["proof_reasons"][:5])
        p.append(f"<tr data-mailbox='{m['mailbox_id']}'><td>{_e(m['address'])}</td>"
                 f"<td><a href='{base}/lookup?q={quote(m['household_id'])}'>{_e(m['household_id'])}</a></td>"
                 f"<td>{_e(m['protocol'])}</td><td class=n>{_n(m['n_copied'])}</td>"
                 f"<td class=n>{human_bytes(m['bytes_copied'])}</td><td class=n>{_n(uns)}</td>"
                 f"<td>{_e((m['last_pass_kind'] or '') + ' ' + (m['last_pass_status'] or '') if m['last_pass_kind'] else None)}</td>"
                 f"<td>{_e(m['last_pass_finished'])}</td>"
                 f"<td class='proof {_state_class(m['proof_state'])}' title='{escape(why)}'>{_e(m['proof_state'])}</td>"
                 f"<td>{_e(m['proven_at'])}</td>"
                 f"<td class=n>{_n(m['active_waivers'])}</td><td class=n>{_n(m['open_exceptions'])}</td></tr>")
    p.append("</table><h2>Exceptions</h2>")
    if bp["exceptions"]:
        p.append("<table id='exceptions'><tr><th>#</th><th>kind</th><th>severity</th><th>status</th>"
                 "<th>mailbox</th><th>summary</th><th>opened</th><th>resolved by</th></tr>")
        for e in bp["exceptions"]:
            p.append(f"<tr><td>{e['id']}</td><td>{_e(e['kind'])}</td><td>{_e(e['severity'])}</td>"
                     f"<td class='{'bad' if e['status'] in ('open', 'acknowledged') else 'muted'}'>{_e(e['status'])}</td>"
                     f"<td>{_e(e['mailbox'])}</td><td>{_e(e['summary'])}</td><td>{_e(e['opened_at'])}</td>"
                     f"<td>{_e(e['resolved_by'])}</td></tr>")
        p.append("</table>")
    else:
        p.append("<p class=muted id='no-exceptions'>none</p>")
    p.append("<h2>Waivers</h2>")
    if bp["waivers"]:
        p.append("<table id='waivers'><tr><th>#</th><th>mailbox</th><th>scope</th><th>reason</th><th>requested by</th>"
                 "<th>approved by</th><th>approved</th><th>revoked</th></tr>")
        for w in bp["waivers"]:
            p.append(f"<tr><td>{w['id']}</td><td>{_e(w['mailbox'])}</td><td>{_e(w['scope'])}</td>"
                     f"<td>{_e(w['reason'])}</td><td>{_e(w['requested_by'])}</td><td>{_e(w['approved_by'])}</td>"
                     f"<td>{_e(w['approved_at'])}</td><td>{_e(w['revoked_at'])}</td></tr>")
        p.append("</table>")
    else:
        p.append("<p class=muted id='no-waivers'>none</p>")
    p.append(dag_runs_html(dag_runs, base))
    return page(f"mailshift: building {bid}", "".join(p), base, user)


def lookup_html(res: dict | None, base: str, user: str | None = None) -> str:
    q = (res or {}).get("query", "")
    p = ["<h1>Household lookup</h1>",
         f"<form action='{base}/lookup' method='get'><label>household ID, mailbox address, contact name, phone "
         "or the beginning (3+ characters) of an address, name or postal address "
         f"<input name='q' id='q' size=40 value='{escape(q)}'></label> <button id='search'>search</button></form>"]
    if res is None:
        return page("mailshift: lookup", "".join(p), base, user)
    if res.get("note"):
        p.append(f"<p class=muted id='lookup-note'>{escape(res['note'])}</p>")
    if not res["households"]:
        p.append(f"<p id='no-match'>No household matches <b>{escape(q)}</b>.</p>")
    for h in res["households"]:
        p.append(f"<section class='household' data-household='{escape(h['household_id'])}'>"
                 f"<h2>Household {_e(h['household_id'])} <span class=muted>{_e(h['contact_name'])}</span></h2>"
                 f"<p>building <a href='{base}/building/{quote(h['building_id'])}'>{_e(h['building_id'])}</a> "
                 f"{_e(h['building_name'])}, domain {_e(h['domain'])}, wave {_e(h['wave_id'])} "
                 f"(planned start {_e(h['wave_start'])}); MX switched: {_e(h['cutover_at'])}</p>"
                 + (f"<p class='contact'>phone <span class='phone'>{_e(h['phone'])}</span>, postal address "
                    f"<span class='postal'>{_e(h['postal_address'])}</span></p>" if "phone" in h else
                    "<p class='contact muted'>contact details hidden (not granted)</p>")
                 +
                 "<table class='lookup-mailboxes'><tr><th>address</th><th>protocol</th><th>migrated</th>"
                 "<th>first copied</th><th>last copied</th><th>last pass</th><th>messages copied</th>"
                 "<th>proof</th><th>proven at</th><th>why not proven</th><th>open exceptions</th></tr>")
        for m in h["mailboxes"]:
            p.append(f"<tr data-address='{escape(m['address'])}'><td>{_e(m['address'])}</td><td>{_e(m['protocol'])}</td>"
                     f"<td class='{'ok' if m['migrated'] else 'warn'}'>{'yes' if m['migrated'] else 'not yet'}</td>"
                     f"<td>{_e(m['first_copied_at'])}</td><td>{_e(m['last_copied_at'])}</td><td>{_e(m['last_pass'])}</td>"
                     f"<td class=n>{_n(m['messages_copied'])}</td>"
                     f"<td class='proof {_state_class(m['proof_state'])}'>{_e(m['proof_state'])}</td>"
                     f"<td>{_e(m['proven_at'])}</td><td>{'<br>'.join(escape(r) for r in m['proof_reasons'][:3])}</td>"
                     f"<td class=n>{_n(m['open_exceptions'])}</td></tr>")
        p.append("</table><h3>Notices</h3>")
        if h["notices"]:
            p.append("<table class='notices'><tr><th>campaign</th><th>kind</th><th>channel</th><th>mailbox</th>"
                     "<th>status</th><th>sent</th><th>delivered</th><th>acknowledged</th></tr>")
            for n in h["notices"]:
                p.append(f"<tr><td>{_e(n['campaign'])}</td><td>{_e(n['kind'])}</td><td>{_e(n['channel'])}</td>"
                         f"<td>{_e(n['mailbox'])}</td><td>{_e(n['status'])}</td><td>{_e(n['sent_at'])}</td>"
                         f"<td>{_e(n['delivered_at'])}</td><td>{_e(n['acknowledged_at'])}</td></tr>")
            p.append("</table>")
        else:
            p.append("<p class=muted>no notices</p>")
        p.append("</section>")
    return page("mailshift: lookup", "".join(p), base, user)
