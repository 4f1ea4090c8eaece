"""Audit reports per building and per wave, for the operators: findings by kind, households
affected, notice progress by channel and status; CSV or JSON. The counts come from
`mailshift.store.audit.report_counts`."""
from __future__ import annotations

import csv

from mailshift.customers import notices
from mailshift.customers.audit import require_scope
from mailshift.store import audit as store

COLUMNS = store.REPORT_COLUMNS


def finding_counts(conn, *, building: str | None = None, wave: int | None = None) -> list[dict]:
    """One row per (building, finding kind): open/resolved findings, distinct mailboxes and
    households with an open finding; plus `households_affected` and `notice_<channel>_<status>`
    rows; sorted by building, then kind."""
    with conn:
        require_scope(conn, building=building, wave=wave)
        rows = store.report_counts(conn, building=building, wave=wave)
        rows = [r for r in rows if r["kind"] != "households_affected"] + \
            _affected_and_destination(conn, rows)
    rows.sort(key=lambda r: (r["building_id"], r["kind"]))
    return rows


def _affected_and_destination(conn, rows: list[dict]) -> list[dict]:
    """Per building: `households_affected` as the notice policy counts them (waived unknowns
    out, leave-on-server in where the destination does not keep UIDLs), and what the probe
    found about the building's destination (`dest_keeps_uidl_yes|no|unprobed`)."""
    out = []
    for (wave, bid, domain) in sorted({(r["wave"], r["building_id"], r["domain"]) for r in rows},
                                      key=lambda t: t[1]):
        hhs = notices.households(conn, building=bid)
        affected = [h for h in hhs.values() if h.affected]
        mbs = {m for h in affected for m, _a, _k, _t in h.changes}
        out.append({"wave": wave, "building_id": bid, "domain": domain,
                    "kind": "households_affected", "open": len(affected), "resolved": 0,
                    "mailboxes": len(mbs), "households": len(affected)})
        dest = next(iter(hhs.values())).destination if hhs else notices.DEFAULT_DESTINATION
        cap = store.capability(conn, dest)
        state = "unprobed" if cap is None or cap["keeps_uidl"] is None else \
            ("yes" if cap["keeps_uidl"] else "no")
        out.append({"wave": wave, "building_id": bid, "domain": domain,
                    "kind": f"dest_keeps_uidl_{state}", "open": 0, "resolved": 0,
                    "mailboxes": 0, "households": 0})
    return out


def write_csv(rows: list[dict], out) -> None:
    w = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
