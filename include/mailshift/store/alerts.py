"""Alerts already posted (migration 0011): one row per problem key, so a problem pages once."""

from __future__ import annotations


def claim(conn, dedup_key: str, kind: str, summary: str | None = None) -> bool:
    """True for the first caller with this key (it posts); False for every later one (it only
    counts `seen`)."""
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO alert AS a (dedup_key, kind, summary) VALUES (%s, %s, %s)"
                    " ON CONFLICT (dedup_key) DO UPDATE SET seen = a.seen + 1, last_at = now()"
                    " RETURNING a.seen", (dedup_key, kind, (summary or "")[:500]))
        return cur.fetchone()[0] == 1


def release(conn, dedup_key: str) -> None:
    """Forget a key whose message could not be sent, so the next caller tries again."""
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM alert WHERE dedup_key = %s AND seen = 1", (dedup_key,))


def seen(conn, dedup_key: str) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT seen FROM alert WHERE dedup_key = %s", (dedup_key,))
        row = cur.fetchone()
        return row[0] if row else 0
