"""Waves at run time: which buildings a wave holds, and how far it got (for the wave DAG)."""

from __future__ import annotations

PROVEN_VERDICTS = ("proven", "proven_with_waivers")


def wave_buildings(conn, wave_number: int) -> list[str]:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM building WHERE wave_id = %s ORDER BY id",
                    (wave_number,))
        return [r[0] for r in cur.fetchall()]


def wave_totals(conn, wave_number: int) -> dict:
    """Buildings, mailboxes, proven mailboxes, messages and bytes copied for one wave."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            WITH mb AS (
                SELECT m.id, h.building_id FROM mailbox m
                JOIN household h ON h.id = m.household_id
                JOIN building b ON b.id = h.building_id
                WHERE b.wave_id = %s),
            latest AS (
                SELECT DISTINCT ON (p.mailbox_id) p.mailbox_id, p.verdict FROM proof p
                JOIN mb ON mb.id = p.mailbox_id ORDER BY p.mailbox_id, p.id DESC),
            copied AS (
                SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM message
                WHERE mailbox_id IN (SELECT id FROM mb) AND state = 1)
            SELECT (SELECT count(DISTINCT building_id) FROM mb),
                   (SELECT count(*) FROM mb),
                   (SELECT count(*) FROM latest WHERE verdict = ANY(%s)),
                   (SELECT count(DISTINCT mb.building_id) FROM mb WHERE NOT EXISTS (
                        SELECT 1 FROM mb m2 LEFT JOIN latest l ON l.mailbox_id = m2.id
                        WHERE m2.building_id = mb.building_id AND (l.verdict IS NULL OR NOT l.verdict = ANY(%s)))),
                   copied.n, copied.bytes
            FROM copied
            """,
            (wave_number, list(PROVEN_VERDICTS), list(PROVEN_VERDICTS)),
        )
        buildings, mailboxes, proven, proven_buildings, messages, bytes_ = cur.fetchone()
    return {"buildings": buildings, "mailboxes": mailboxes, "proven_mailboxes": proven,
            "not_proven": mailboxes - proven, "proven_buildings": proven_buildings,
            "messages": messages, "bytes": int(bytes_)}
