"""Audit reports per building and per wave: counts by finding type, households affected, notice
progress; CSV for the operators."""
from __future__ import annotations

import csv

COLUMNS = ("wave", "building_id", "domain", "kind", "open", "resolved", "mailboxes",
           "households")


def finding_counts(conn, *, building: str | None = None, wave: int | None = None) -> list[dict]:
    """One row per (building, finding kind): open/resolved findings, distinct mailboxes and
    households with an open finding; plus `households_affected`, `notices_*` summary rows."""
    if building is None and wave is None:
        raise ValueError("a building or a wave is required")
    where, params = ("b.id = %s", [building]) if building else ("b.wave_id = %s", [wave])
    with conn.cursor() as cur:
        cur.execute(f"""
            SELECT b.wave_id, b.id, b.domain, f.kind,
                   count(*) FILTER (WHERE f.status = 'open'),
                   count(*) FILTER (WHERE f.status = 'resolved'),
                   count(DISTINCT f.mailbox_id) FILTER (WHERE f.status = 'open'),
                   count(DISTINCT f.household_id) FILTER (WHERE f.status = 'open')
            FROM building b JOIN audit_finding f ON f.building_id = b.id
            WHERE {where} GROUP BY 1, 2, 3, 4 ORDER BY 2, 4""", params)
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
        cur.execute(f"""
            SELECT b.wave_id, b.id, b.domain, 'notice_' || n.channel || '_' || n.status,
                   count(*), 0, count(DISTINCT n.mailbox_id), count(DISTINCT n.household_id)
            FROM building b JOIN household h ON h.building_id = b.id
            JOIN notice n ON n.household_id = h.id
            WHERE {where} GROUP BY 1, 2, 3, 4 ORDER BY 2, 4""", params)
        rows += [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
        cur.execute(f"""
            SELECT b.wave_id, b.id, b.domain, 'households_affected',
                   count(DISTINCT f.household_id), 0, count(DISTINCT f.mailbox_id),
                   count(DISTINCT f.household_id)
            FROM building b JOIN audit_finding f ON f.building_id = b.id
            WHERE {where} AND f.status = 'open' AND f.affects_customer
            GROUP BY 1, 2, 3""", params)
        rows += [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
    rows.sort(key=lambda r: (r["building_id"], r["kind"]))
    return rows


def write_csv(rows: list[dict], out) -> None:
    w = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
