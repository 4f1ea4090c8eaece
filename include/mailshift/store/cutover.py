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
