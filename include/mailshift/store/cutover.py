"""What a domain's cutover reads of the inventory: its buildings and its mailboxes (through the
`mailbox_scope` view). DNS change records are in `mailshift.store.dns_changes`."""

from __future__ import annotations


def domain_buildings(conn, domain: str) -> list[str]:
    """Building ids on the domain (each is verified on its own before and after the swap)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM building WHERE domain = %s ORDER BY id", (domain,))
        return [r[0] for r in cur.fetchall()]


def domain_mailboxes(conn, domain: str) -> list[tuple[int, str]]:
    """(mailbox id, address) of every mailbox on the domain, by building then id."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT mailbox_id, address FROM mailbox_scope WHERE domain = %s"
                    " ORDER BY building_id, mailbox_id", (domain,))
        return cur.fetchall()


def ping(conn) -> None:
    """One round trip to the database (the self-check DAG)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchone()


def domain_mailbox_sources(conn, domain: str) -> list[tuple[int, str, str]]:
    """(mailbox id, building id, source system) of every mailbox on the domain, by building then id:
    the cutover splits them into batches per source system (its pool and connection budget)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT mailbox_id, building_id, source_system FROM mailbox_scope WHERE domain = %s"
                    " ORDER BY building_id, mailbox_id", (domain,))
        return cur.fetchall()


def ledger_uid_marks(conn, mailbox_id: int) -> dict[tuple[str, int], int]:
    """{(source folder, UIDVALIDITY): highest source UID in the ledger} of one mailbox (one
    primary-key probe per folder): what the drain compares the old server's STATUS with."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT f.src_name, f.src_uidvalidity,"
                    " (SELECT max(m.src_uid) FROM message m WHERE m.mailbox_id = f.mailbox_id AND m.folder_id = f.id)"
                    " FROM folder f WHERE f.mailbox_id = %s", (mailbox_id,))
        return {(name, int(uv)): int(top or 0) for name, uv, top in cur.fetchall()}
