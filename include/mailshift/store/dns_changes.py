"""`dns_change` rows: every DNS change the cutover makes, who approved it, old and new records,
times, and what each authoritative server answered afterwards."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extras


@dataclass(frozen=True)
class DnsChange:
    id: int
    domain: str
    kind: str
    status: str
    old_rdata: tuple[str, ...]
    new_rdata: tuple[str, ...]
    old_ttl: int | None
    new_ttl: int | None
    requested_by: str | None
    approved_by: str | None
    approved_at: object
    applied_at: object
    verified_at: object
    verification: dict | None
    detail: str | None


_COLS = ("id, domain, kind, status, old_rdata, new_rdata, old_ttl, new_ttl, requested_by, approved_by, approved_at,"
         " applied_at, verified_at, verification, detail")


def _row(r) -> DnsChange:
    r = list(r)
    r[4] = tuple(r[4] or ())
    r[5] = tuple(r[5] or ())
    return DnsChange(*r)


def get(conn, change_id: int) -> DnsChange:
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT {_COLS} FROM dns_change WHERE id = %s", (change_id,))
        return _row(cur.fetchone())


def latest(conn, domain: str, kind: str, statuses: tuple[str, ...] = ("applied", "verified"),
           new_rdata: tuple[str, ...] | None = None) -> DnsChange | None:
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT {_COLS} FROM dns_change WHERE domain = %s AND kind = %s AND status = ANY(%s)"
                    " AND (%s::text[] IS NULL OR new_rdata = %s::text[])"
                    " ORDER BY coalesce(applied_at, created_at) DESC, id DESC LIMIT 1",
                    (domain, kind, list(statuses), list(new_rdata) if new_rdata is not None else None,
                     list(new_rdata) if new_rdata is not None else None))
        r = cur.fetchone()
        return _row(r) if r else None


def insert(conn, domain: str, kind: str, *, old_rdata, new_rdata, old_ttl, new_ttl, provider: str,
           requested_by: str | None = None, approved_by: str | None = None, approved_at=None,
           status: str = "planned", detail: str | None = None) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO dns_change (domain, kind, rrtype, old_rdata, new_rdata, old_ttl, new_ttl, status,"
                    " requested_by, approved_by, approved_at, provider, detail)"
                    " VALUES (%s, %s, 'MX', %s, %s, %s, %s, %s, %s, %s, coalesce(%s, CASE WHEN %s::text IS NULL"
                    " THEN NULL ELSE now() END), %s, %s) RETURNING id",
                    (domain, kind, list(old_rdata), list(new_rdata), old_ttl, new_ttl, status, requested_by,
                     approved_by, approved_at, approved_by, provider, detail))
        return cur.fetchone()[0]


def mark(conn, change_id: int, status: str, *, detail: str | None = None, verification: dict | None = None) -> None:
    """planned -> applied (applied_at) -> verified (verified_at); or failed / rolled_back."""
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE dns_change SET status = %s,"
                    " applied_at = CASE WHEN %s IN ('applied', 'verified') THEN coalesce(applied_at, now())"
                    "                   ELSE applied_at END,"
                    " verified_at = CASE WHEN %s = 'verified' THEN coalesce(verified_at, now()) ELSE verified_at END,"
                    " verification = coalesce(%s, verification),"
                    " detail = CASE WHEN %s::text IS NULL THEN detail"
                    "               ELSE concat_ws(E'\\n', detail, %s::text) END"
                    " WHERE id = %s",
                    (status, status, status,
                     psycopg2.extras.Json(verification) if verification is not None else None,
                     detail, detail, change_id))


def fail_planned(conn, domain: str, kind: str, note: str) -> list[int]:
    """Close every `planned` change of this kind on the domain as failed, appending `note`
    (an abort before the change was sent); returns their ids."""
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE dns_change SET status = 'failed', detail = concat_ws(E'\\n', detail, %s)"
                    " WHERE domain = %s AND kind = %s AND status = 'planned' RETURNING id",
                    (note, domain, kind))
        return [r[0] for r in cur.fetchall()]


def db_now(conn):
    with conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]


class DomainLock:
    """Session advisory lock per domain: one cutover step at a time changes a domain's DNS."""

    def __init__(self, conn, domain: str):
        self.conn, self.domain = conn, domain

    def __enter__(self):
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext('mailshift.cutover:' || %s))", (self.domain,))
        return self

    def __exit__(self, *exc):
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(hashtext('mailshift.cutover:' || %s))", (self.domain,))
        return False
