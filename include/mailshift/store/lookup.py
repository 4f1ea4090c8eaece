"""Read-only counts for `mailshift status` and the demo: inventory sizes, ledger states, passes.

Counts only (a few aggregate queries); the support-desk look-ups and building reports read the
progress summaries through mailshift.progress.queries."""

from __future__ import annotations

#: inventory tables counted by `mailshift status`, in display order
INVENTORY_TABLES = ("source_system", "domain", "building", "household", "mailbox")
_INVENTORY_KEYS = ("source_systems", "domains", "buildings", "households", "mailboxes")


def status_report(conn) -> dict:
    """Inventory counts, messages and bytes per ledger state, passes by kind and status, folders
    by state, and how many mailboxes have a finished pass; one read-only transaction."""
    out: dict = {}
    with conn, conn.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in INVENTORY_TABLES))
        out.update(zip(_INVENTORY_KEYS, cur.fetchone(), strict=True))
        cur.execute("SELECT s.name, count(m.*), coalesce(sum(m.size), 0) FROM message_state s"
                    " LEFT JOIN message m ON m.state = s.code GROUP BY s.code, s.name ORDER BY s.code")
        out["messages"] = {name: {"count": n, "bytes": int(b)} for name, n, b in cur.fetchall()}
        cur.execute("SELECT count(DISTINCT mailbox_id) FROM pass WHERE status = 'finished'")
        out["mailboxes_with_a_finished_pass"] = cur.fetchone()[0]
        cur.execute("SELECT kind, status, count(*) FROM pass GROUP BY kind, status ORDER BY kind, status")
        out["passes"] = [{"kind": k, "status": s, "count": n} for k, s, n in cur.fetchall()]
        cur.execute("SELECT state, count(*) FROM folder GROUP BY state ORDER BY state")
        out["folders"] = dict(cur.fetchall())
    return out


def sample_login(conn, system: str) -> str | None:
    """A login to check a server with: the first mailbox of a source system (its source login),
    or of the whole inventory on the destination (`dest`: its destination login)."""
    with conn, conn.cursor() as cur:
        if system == "dest":
            cur.execute("SELECT dest_login FROM mailbox ORDER BY id LIMIT 1")
        else:
            cur.execute("SELECT m.source_login FROM mailbox_scope s JOIN mailbox m ON m.id = s.mailbox_id"
                        " WHERE s.source_system = %s ORDER BY m.id LIMIT 1", (system,))
        row = cur.fetchone()
    return row[0] if row else None
