"""Open exceptions: problems that need a person and block the gate until resolved or waived.

`raise_exception` is idempotent through a dedup key, so a task that runs twice records the
same problem once; `resolve_if_open` closes it when a later run finds the problem gone.
"""

from __future__ import annotations

import psycopg2.extras


def raise_exception(conn, kind: str, summary: str, dedup_key: str, *, building_id: str | None = None,
                    mailbox_id: int | None = None, domain: str | None = None, severity: str = "blocking",
                    detail: dict | None = None) -> int:
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO exception (kind, severity, dedup_key, domain, building_id, mailbox_id, summary, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (dedup_key) DO UPDATE SET summary = EXCLUDED.summary, detail = EXCLUDED.detail,"
            " status = CASE WHEN exception.status IN ('resolved') THEN 'open' ELSE exception.status END,"
            " resolved_at = CASE WHEN exception.status IN ('resolved') THEN NULL ELSE exception.resolved_at END,"
            " resolved_by = CASE WHEN exception.status IN ('resolved') THEN NULL ELSE exception.resolved_by END,"
            " resolution = CASE WHEN exception.status IN ('resolved') THEN NULL ELSE exception.resolution END,"
            " updated_at = now() RETURNING id",
            (kind, severity, dedup_key, domain, building_id, mailbox_id, summary,
             psycopg2.extras.Json(detail) if detail is not None else None),
        )
        return cur.fetchone()[0]


def resolve_if_open(conn, dedup_key: str, by: str, resolution: str) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE exception SET status = 'resolved', resolved_at = now(), resolved_by = %s, resolution = %s,"
            " updated_at = now() WHERE dedup_key = %s AND status IN ('open', 'acknowledged')",
            (by, resolution, dedup_key),
        )
        return cur.rowcount > 0


def open_exceptions(conn, *, building_id: str | None = None, domain: str | None = None) -> list[dict]:
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(
            "SELECT e.id, e.kind, e.severity, e.building_id, e.mailbox_id, m.address, e.summary, e.opened_at"
            " FROM exception e LEFT JOIN mailbox_scope m ON m.mailbox_id = e.mailbox_id"
            " LEFT JOIN building b ON b.id = coalesce(e.building_id, m.building_id)"
            " WHERE e.status IN ('open', 'acknowledged') AND e.severity = 'blocking'"
            " AND (%s::text IS NULL OR b.id = %s) AND (%s::text IS NULL OR coalesce(e.domain, b.domain) = %s)"
            " ORDER BY e.id",
            (building_id, building_id, domain, domain),
        )
        return [dict(r) for r in cur.fetchall()]
