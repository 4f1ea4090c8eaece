"""Audit reports per building and per wave, for the operators: findings by kind, households
affected, notice progress by channel and status; CSV or JSON. The counts come from
`mailshift.store.audit.report_counts`."""
from __future__ import annotations

import csv

from mailshift.store import audit as store

COLUMNS = store.REPORT_COLUMNS


def finding_counts(conn, *, building: str | None = None, wave: int | None = None) -> list[dict]:
    """One row per (building, finding kind): open/resolved findings, distinct mailboxes and
    households with an open finding; plus `households_affected` and `notice_<channel>_<status>`
    rows; sorted by building, then kind."""
    with conn:
        rows = store.report_counts(conn, building=building, wave=wave)
    rows.sort(key=lambda r: (r["building_id"], r["kind"]))
    return rows


def write_csv(rows: list[dict], out) -> None:
    w = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
