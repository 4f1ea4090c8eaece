"""The per-building proof report: one self-contained HTML file an auditor can read offline.

Shows the verify run, every Great Expectations expectation with its observed/unexpected values,
each mailbox's proof state and counts, every finding (mailbox, folder, source UID, destination
UID), every altered message the building spec accepts (by class, never silently), and every
waiver of the building's mailboxes (active and revoked), with who and why.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import shutil
from pathlib import Path

from mailshift.rules import states as rs
from mailshift.rules.proof import proof_states
from mailshift.store import verification as vstore
from mailshift.store import waivers as waiver_store

_CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:left;vertical-align:top}
th{background:#eee}.ok{color:#060;font-weight:bold}.bad{color:#b00;font-weight:bold}
.waived{color:#a60;font-weight:bold}code{font-size:12px}"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _state_cls(state: str) -> str:
    return {rs.PROVEN: "ok", rs.WAIVED: "waived"}.get(state, "bad")


def _table(headers, rows) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _head(building_id: str, run_id: int, data: dict, gx, errors, states: dict) -> list[str]:
    name, domain, system = data["building"]
    started, verifier, kind, detail = data["run"]
    ids = list(states)
    n_proven = sum(1 for s in states.values() if s.state == rs.PROVEN)
    n_waived = sum(1 for s in states.values() if s.state == rs.WAIVED)
    overall = gx.success and not errors and n_proven + n_waived == len(ids)
    return [f"<!doctype html><html><head><meta charset='utf-8'><title>mailshift proof — {_e(building_id)}"
            f"</title><style>{_CSS}</style></head><body>",
            f"<h1>Zero-loss proof report — building {_e(building_id)} {_e(name)}</h1>",
            f"<p>Domain <b>{_e(domain)}</b>, source system <b>{_e(system)}</b>. Verify run <b>#{run_id}</b> "
            f"({_e(kind)}), started {_e(started)}, verifier {_e(verifier)}, mode {_e((detail or {}).get('mode'))}. "
            f"Report written {_e(dt.datetime.now(dt.UTC).isoformat(timespec='seconds'))}.</p>",
            f"<h2>Verdict: <span class='{'ok' if overall else 'bad'}'>"
            f"{'PROVEN' if overall and not n_waived else 'PROVEN WITH WAIVERS' if overall else 'NOT PROVEN'}"
            "</span></h2>",
            f"<p>{len(ids)} mailboxes: {n_proven} proven, {n_waived} waived, "
            f"{len(ids) - n_proven - n_waived} not proven. Great Expectations suite "
            f"<code>{_e(gx.result.get('suite_name'))}</code>: <span class='{'ok' if gx.success else 'bad'}'>"
            f"{'passed' if gx.success else 'FAILED'}</span> ({gx.evaluated - gx.failed}/{gx.evaluated} "
            "expectations).</p>"]


def _mailboxes(mailboxes, states: dict) -> str:
    rows = []
    for (mid, addr, proto, sc, dc, sb, db, matched, tr, tb, ek, wvd, bo, mode, sampled, secs, acc) in mailboxes:
        st = states[mid]
        rows.append([_e(addr), _e(proto), f"<span class='{_state_cls(st.state)}'>{_e(st.state)}</span>",
                     _e(sc), _e(dc), _e(matched), _e(sb), _e(db), f"{_e(tr)} / {_e(tb)} B", _e(ek), _e(acc),
                     _e(wvd), _e(bo),
                     _e(f"{mode} ({sampled} sampled)" if mode == "sample" else mode), _e(secs and round(secs, 2)),
                     "<br>".join(_e(r) for r in st.reason_texts()[:10])])
    return _table(["mailbox", "protocol", "proof state", "source msgs", "dest msgs", "matched", "source bytes",
                   "dest bytes", "X-UIDL transformed (msgs / bytes)", "kept expunged", "accepted altered", "waived",
                   "open blocking", "mode", "seconds", "reasons"], rows)


def _expectations(gx) -> str:
    grows = []
    for r in gx.result.get("results", []):
        cfg = r.get("expectation_config", {})
        kw = {k: v for k, v in cfg.get("kwargs", {}).items() if k != "batch_id"}
        res = r.get("result", {})
        obs = res.get("observed_value")
        unexpected = res.get("unexpected_index_list") or res.get("partial_unexpected_list")
        grows.append([f"<span class='{'ok' if r.get('success') else 'bad'}'>{'pass' if r.get('success') else 'FAIL'}"
                      "</span>", _e(cfg.get("type")), f"<code>{_e(json.dumps(kw, ensure_ascii=False))}</code>",
                      _e((cfg.get("meta") or {}).get("why")),
                      _e(obs if obs is not None else res.get("unexpected_count")),
                      f"<code>{_e(json.dumps(unexpected, ensure_ascii=False, default=str)[:1500])}</code>"
                      if unexpected else ""])
    return _table(["result", "expectation", "arguments", "meaning", "observed / unexpected count",
                   "unexpected rows"], grows)


def _waivers(all_waivers, mailboxes) -> str:
    if not all_waivers:
        return "<p>No waivers exist for these mailboxes.</p>"
    addr_of = {m[0]: m[1] for m in mailboxes}
    return _table(["#", "mailbox", "scope", "target", "reason", "requested by", "approved by", "approved at",
                   "status"],
                  [[_e(w.id), _e(addr_of.get(w.mailbox_id)), _e(w.scope),
                    _e(w.describe().split(" (", 1)[1].split(") by ", 1)[0]), _e(w.reason), _e(w.requested_by),
                    _e(w.approved_by), _e(w.approved_at),
                    "<span class='waived'>active</span>" if w.active
                    else _e(f"revoked {w.revoked_at} by {w.revoked_by}")] for w in all_waivers])


def accepted_alterations(findings) -> dict[str, int]:
    """{class: messages} of the altered messages the building spec accepted in this run: the
    non-blocking `digest_mismatch` findings with a class (`rules.waivers.accept_alterations`)."""
    out: dict[str, int] = {}
    for _i, _a, kind, blocking, *_rest, cls in findings:
        if kind == "digest_mismatch" and not blocking and cls:
            out[cls] = out.get(cls, 0) + 1
    return out


def _accepted(findings, spec_accepts) -> str:
    counts = accepted_alterations(findings)
    listed = ", ".join(spec_accepts) if spec_accepts else "none"
    if not counts:
        return f"<p>Alteration classes the building spec accepts: <b>{_e(listed)}</b>. No altered message accepted.</p>"
    return (f"<p>Alteration classes the building spec accepts: <b>{_e(listed)}</b>. <b>{sum(counts.values())}</b> "
            "altered message(s) accepted as altered, not blocking the proof: "
            + ", ".join(f"<b>{_e(n)}</b> {_e(c)}" for c, n in sorted(counts.items()))
            + " (each listed below as a non-blocking <code>digest_mismatch</code> with its evidence).</p>")


def _findings(findings) -> str:
    if not findings:
        return ("<p>No findings: every source message is at the destination exactly once, with equal bytes "
                "(after reversing declared transformations), flags and INTERNALDATE.</p>")
    return _table(["#", "mailbox", "kind", "blocks", "source folder", "dest folder", "source UID", "dest UID",
                   "POP3 UIDL", "alteration class", "detail", "waiver"],
                  [[_e(i), _e(a), _e(k), "yes" if b else ("no (accepted)" if k == "digest_mismatch" and c else "no"),
                    _e(sf), _e(df), _e(su), _e(du), _e(u), _e(c), _e(d), _e(f"#{w}" if w else "")]
                   for i, a, k, b, sf, df, su, du, u, d, w, c in findings])


def render(conn, building_id: str, run_id: int, gx, errors) -> str:
    data = vstore.report_rows(conn, building_id, run_id)
    mailboxes = data["mailboxes"]
    ids = [m[0] for m in mailboxes]
    by_id = {s.mailbox_id: s for s in proof_states(conn, mailbox_ids=ids)} if ids else {}
    states = {mid: by_id[mid] for mid in ids}
    p = _head(building_id, run_id, data, gx, errors, states)
    if errors:
        p.append("<h3 class='bad'>Mailboxes that could not be verified</h3>")
        p.append(_table(["mailbox", "error"], [[_e(a), _e(e)] for a, e in errors.items()]))
    p += ["<h2>Mailboxes</h2>", _mailboxes(mailboxes, states),
          "<h2>Great Expectations results</h2>", _expectations(gx),
          "<h2>Accepted alterations</h2>", _accepted(data["findings"], (data.get("spec") or {}).get(
              "accepted_alterations")),
          "<h2>Waivers</h2>", _waivers(waiver_store.list_waivers(conn, ids), mailboxes),
          f"<h2>Findings ({len(data['findings'])})</h2>", _findings(data["findings"]),
          "</body></html>"]
    return "\n".join(p)


def write_building_report(conn, building_id: str, run_id: int, gx, errors, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"verify-run-{run_id}.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(conn, building_id, run_id, gx, errors), encoding="utf-8")
    os.replace(tmp, path)
    shutil.copyfile(path, out_dir / "latest.html")
    (out_dir / f"verify-run-{run_id}.gx.json").write_text(json.dumps(gx.result, indent=1, ensure_ascii=False),
                                                          encoding="utf-8")
    return path
