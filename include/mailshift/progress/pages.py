"""The pages above a building: a wave, a domain, all domains and the building map (plain
Python, no Airflow), from the dicts of `queries`; the primitives come from `progress.html`."""

from __future__ import annotations

from html import escape
from urllib.parse import quote, urlencode

from mailshift.progress.html import (
    _e,
    _n,
    buildings_table,
    counts_cells,
    counts_head,
    dag_runs_html,
    human_bytes,
    page,
    state_badge,
)
from mailshift.rules import states as rs


def _summary(g: dict, what: str) -> str:
    """The state and the figures of a wave or a domain, with the counts every level shows."""
    return (f"<p>state <b id='{what}-state'>{state_badge(g['status'])}</b> "
            f"<span class=muted>(from its buildings: {', '.join(f'{_n(v)} {escape(k)}' for k, v in g['buildings_by_state'].items() if v) or 'none'})</span></p>"
            f"<p id='{what}-summary'>{_n(g['buildings'])} buildings; mailboxes copied {_n(g['mailboxes_copied'])} / "
            f"{_n(g['mailboxes'])}, proven {_n(g['mailboxes_proven'])}, unproven {_n(g['unproven_mailboxes'])}; "
            f"messages copied {_n(g['messages_copied'])} ({human_bytes(g['bytes_copied'])})</p>"
            f"<table id='{what}-counts'><tr>{counts_head()}</tr><tr>{counts_cells(g)}</tr></table>")


def wave_html(wp: dict, dag_runs: list[dict] | None, base: str, user: str | None = None) -> str:
    w = wp["wave"]
    stored = (f" <span class=muted>(planned as {_e(w['stored_status'])})</span>"
              if w.get("stored_status") and w["stored_status"] != w["status"] else "")
    p = [f"<h1>Wave {_e(w['wave'])} <span class=muted>{_e(w['name'])}</span></h1>",
         f"<p>kind {_e(w['kind'])}, planned start {_e(w['planned_start'])}{stored}; domains: "
         + ", ".join(f"<a href='{base}/domain/{quote(d)}'>{_e(d)}</a>" for d in wp["domains"])
         + f"; <a href='{base}/map?{urlencode({'wave': w['wave']})}'>on the map</a></p>",
         _summary(w, "wave"), dag_runs_html(dag_runs, base), "<h2>Buildings</h2>",
         buildings_table(wp["buildings"], base)]
    return page(f"mailshift: wave {w['wave']}", "".join(p), base, user)


def domain_html(dp: dict, dag_runs: list[dict] | None, base: str, user: str | None = None) -> str:
    d = dp["domain"]
    p = [f"<h1>Domain {_e(d['domain'])}</h1>",
         "<p>waves: " + (", ".join(f"<a href='{base}/wave/{w}'>{_e(w)}</a>" for w in dp["waves"]) or _e(None))
         + f"; {_n(d['domain_exceptions'])} open exceptions on the domain as a whole</p>",
         _summary(d, "domain"), "<h2>MX and TTL changes</h2>"]
    if dp["dns_changes"]:
        p.append("<table id='dns-changes'><tr><th>#</th><th>kind</th><th>status</th><th>new</th><th>applied</th>"
                 "<th>verified</th><th>approved by</th></tr>")
        for c in dp["dns_changes"]:
            p.append(f"<tr><td>{c['id']}</td><td>{_e(c['kind'])}</td><td>{_e(c['status'])}</td>"
                     f"<td>{_e(' '.join(c['new_rdata'] or []))}</td><td>{_e(c['applied_at'])}</td>"
                     f"<td>{_e(c['verified_at'])}</td><td>{_e(c['approved_by'])}</td></tr>")
        p.append("</table>")
    else:
        p.append("<p class=muted id='no-dns-changes'>none yet</p>")
    p += [dag_runs_html(dag_runs, base), "<h2>Buildings</h2>", buildings_table(dp["buildings"], base)]
    return page(f"mailshift: domain {d['domain']}", "".join(p), base, user)


def domains_html(rows: list[dict], base: str, user: str | None = None) -> str:
    p = ["<h1>Domains</h1><table id='domains'><tr><th>domain</th><th>state</th><th>buildings</th>"
         f"<th>mailboxes copied</th><th>proven</th>{counts_head()}</tr>"]
    for d in rows:
        p.append(f"<tr data-domain='{escape(d['domain'])}'><td><a href='{base}/domain/{quote(d['domain'])}'>"
                 f"{_e(d['domain'])}</a></td><td>{state_badge(d['status'])}</td><td class=n>{_n(d['buildings'])}</td>"
                 f"<td class=n>{_n(d['mailboxes_copied'])} / {_n(d['mailboxes'])}</td>"
                 f"<td class=n>{_n(d['mailboxes_proven'])}</td>{counts_cells(d)}</tr>")
    p.append("</table>")
    return page("mailshift: domains", "".join(p), base, user)


MAP_CSS = ("<style>.map{display:flex;flex-wrap:wrap;gap:2px;max-width:1300px}"
           ".map a{width:12px;height:12px;display:block;border-radius:2px}"
           ".map a.x{outline:2px solid #d50000;outline-offset:-1px}"
           ".legend span{margin-right:12px}</style>")


def _select(name: str, label: str, current, options: list[tuple]) -> str:
    opts = "".join(f"<option value='{escape(str(v))}'{' selected' if str(v) == str(current) else ''}>"
                   f"{escape(str(t))}</option>" for v, t in options)
    return f"<label>{label} <select name='{name}' id='map-{name}'><option value=''>all</option>{opts}</select></label> "


#: the counts a cell's tooltip names when they are not zero
_CELL_COUNTS = (("refused", "messages_refused"), ("altered", "messages_altered"), ("waived", "mailboxes_waived"),
                ("exceptions", "open_exceptions"))


def _cell(c: dict) -> str:
    """One building: coloured by state, outlined when it has open exceptions, linked to its page
    (relative link: the map is at <base>/map), its figures in a short tooltip (counts only when
    not zero: 5,000 cells make the page, every byte counts)."""
    counts = "".join(f", {label} {c[k]}" for label, k in _CELL_COUNTS if c[k])
    tip = (f"{c['id']} {c['state']} w{c['wave_id']} {c['source_system']}: proven "
           f"{c['mailboxes_proven']}/{c['mailboxes']}{counts}")
    x = " x" if c["open_exceptions"] else ""
    return f"<a class='s-{c['state']}{x}' href='building/{quote(c['id'])}' title='{escape(tip)}'></a>"


def map_html(m: dict, base: str, user: str | None = None) -> str:
    f, ch = m["filters"], m["choices"]
    form = (f"<form id='map-filter' action='{base}/map' method='get'>"
            + _select("wave", "wave", f["wave"], [(w["id"], f"{w['id']} {w['name']}") for w in ch["waves"]])
            + _select("system", "source system", f["system"], [(s, s) for s in ch["systems"]])
            + _select("state", "state", f["state"], [(s, s) for s in rs.BUILDING_STATES])
            + "<button id='map-apply'>show</button></form>")
    legend = ("<p class='legend' id='map-legend'>" + "".join(
        f"<span data-state='{s}'>{state_badge(s)} {_n(n)}</span>" for s, n in m["by_state"].items())
        + f"<span><a style='outline:2px solid #d50000;padding:0 6px'>&nbsp;</a> {_n(m['with_exceptions'])} "
          "with open exceptions</span></p>")
    body = (MAP_CSS + f"<h1>Building map <span class=muted id='map-count'>{_n(len(m['cells']))} buildings</span></h1>"
            + form + legend + "<div class='map' id='building-map'>" + "".join(_cell(c) for c in m["cells"])
            + "</div>")
    return page("mailshift: building map", body, base, user)
