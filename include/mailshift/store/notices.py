"""`notice` and `notice_outcome` rows: what each household was told, by which channel, with
which status, and every outcome recorded back (contact centre CSVs, bounces).

The campaign logic (who must be told what, when a household counts as told) lives in
`mailshift.customers.notices`; these functions only read and write rows. They never commit:
the caller chooses the transaction (one sent mail's row alone, so that a crash re-sends at
most the mail in flight; a whole outcomes CSV together, so that one bad row records nothing).
"""

from __future__ import annotations

import datetime as _dt
from typing import NamedTuple

from psycopg2.extras import Json

#: statuses that mean the notice went out (and carry sent_at, schema CHECK of `notice`)
_HAS_SENT_AT = ("sent", "delivered", "acknowledged", "bounced")


class NoticeRow(NamedTuple):
    mailbox_id: int | None
    kind: str
    channel: str
    status: str
    sent_at: _dt.datetime | None
    detail: dict | None


class Recipient(NamedTuple):
    """One mailbox in a campaign's scope, with its household's contact data and its building."""

    household_id: str
    building_id: str
    building_name: str
    domain: str
    contact_name: str
    phone: str
    postal_address: str
    building_spec: dict | None
    mailbox_id: int
    address: str


def scope_filter(building: str | None, domain: str | None, alias: str = "s") -> tuple[str, list]:
    """WHERE fragment over `mailbox_scope` (alias `alias`) for a building or a domain."""
    if building:
        return f"{alias}.building_id = %s", [building]
    if domain:
        return f"{alias}.domain = %s", [domain]
    raise ValueError("a building or a domain is required")


def recipients(conn, *, building: str | None = None, domain: str | None = None) -> list[Recipient]:
    """Every mailbox of the building or domain, ordered by household then mailbox."""
    where, params = scope_filter(building, domain)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT s.household_id, s.building_id, coalesce(b.name, b.id), s.domain,
                               coalesce(h.contact_name, ''), coalesce(h.phone, ''),
                               coalesce(h.postal_address, ''), b.spec, s.mailbox_id, s.address
                        FROM mailbox_scope s JOIN household h ON h.id = s.household_id
                        JOIN building b ON b.id = s.building_id
                        WHERE {where} ORDER BY s.household_id, s.mailbox_id""", params)
        return [Recipient(*r) for r in cur.fetchall()]


def mailboxes_with(conn, *, campaign: str, kind: str, channel: str, statuses: tuple[str, ...],
                   household_ids: list[str]) -> set[int]:
    """Mailboxes of these households whose (campaign, kind, channel) notice has one of `statuses`."""
    with conn.cursor() as cur:
        cur.execute("SELECT mailbox_id FROM notice WHERE campaign = %s AND kind = %s AND channel = %s"
                    " AND status = ANY(%s) AND household_id = ANY(%s)",
                    (campaign, kind, channel, list(statuses), list(household_ids)))
        return {r[0] for r in cur.fetchall()}


def upsert(conn, household_id: str, mailbox_id: int | None, campaign: str, kind: str, channel: str,
           status: str, *, external_ref: str | None = None, detail: dict | None = None,
           at: _dt.datetime | None = None) -> int:
    """Insert or move one notice row to `status` at `at`; keeps the first sent/delivered time,
    merges `detail`. Returns the notice id."""
    at = at or _dt.datetime.now(_dt.UTC)
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO notice (household_id, mailbox_id, campaign, kind, channel, status,
                                sent_at, delivered_at, acknowledged_at, external_ref, detail)
            VALUES (%(h)s, %(m)s, %(c)s, %(k)s, %(ch)s, %(s)s, %(sent)s,
                    CASE WHEN %(s)s = 'delivered' THEN %(at)s END,
                    CASE WHEN %(s)s = 'acknowledged' THEN %(at)s END, %(ref)s, %(d)s)
            ON CONFLICT (household_id, mailbox_id, campaign, kind, channel) DO UPDATE SET
                status = EXCLUDED.status,
                sent_at = coalesce(notice.sent_at, EXCLUDED.sent_at),
                delivered_at = CASE WHEN EXCLUDED.status = 'delivered'
                                    THEN coalesce(notice.delivered_at, EXCLUDED.delivered_at)
                                    ELSE notice.delivered_at END,
                acknowledged_at = CASE WHEN EXCLUDED.status = 'acknowledged'
                                       THEN EXCLUDED.acknowledged_at
                                       ELSE notice.acknowledged_at END,
                external_ref = coalesce(EXCLUDED.external_ref, notice.external_ref),
                detail = coalesce(notice.detail, '{}'::jsonb) || coalesce(EXCLUDED.detail,
                                                                          '{}'::jsonb)
            RETURNING id""",
                    {"h": household_id, "m": mailbox_id, "c": campaign, "k": kind, "ch": channel,
                     "s": status, "sent": at if status in _HAS_SENT_AT else None, "at": at,
                     "ref": external_ref, "d": Json(detail) if detail is not None else None})
        return cur.fetchone()[0]


def plan(conn, household_id: str, campaign: str, kind: str, channel: str) -> str:
    """A household-level (no mailbox) notice row `planned` unless one exists; its status now."""
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO notice (household_id, mailbox_id, campaign, kind, channel, status)
                       VALUES (%s, NULL, %s, %s, %s, 'planned')
                       ON CONFLICT (household_id, mailbox_id, campaign, kind, channel) DO NOTHING""",
                    (household_id, campaign, kind, channel))
        cur.execute("""SELECT status FROM notice WHERE household_id = %s AND mailbox_id IS NULL
                       AND campaign = %s AND kind = %s AND channel = %s""",
                    (household_id, campaign, kind, channel))
        return cur.fetchone()[0]


def household_exists(conn, household_id: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM household WHERE id = %s", (household_id,))
        return cur.fetchone() is not None


def household_mailbox(conn, household_id: str, address: str) -> int | None:
    """The household's mailbox with this address (case-insensitive), or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT mailbox_id FROM mailbox_scope WHERE lower(address) = lower(%s)"
                    " AND household_id = %s", (address, household_id))
        row = cur.fetchone()
        return row[0] if row else None


def add_outcome(conn, notice_id: int, outcome: str, status: str, at: _dt.datetime, *,
                recorded_by: str, note: str | None, source: str | None) -> None:
    """The audit trail behind notice.status: one row per recorded outcome."""
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO notice_outcome (notice_id, outcome, status, at, recorded_by,
                       note, source) VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                    (notice_id, outcome, status, at, recorded_by, note, source))


def of_households(conn, household_ids: list[str], campaign: str) -> dict[str, list[NoticeRow]]:
    """Every notice row of the campaign for these households (one query for the whole gate)."""
    out: dict[str, list[NoticeRow]] = {h: [] for h in household_ids}
    with conn.cursor() as cur:
        cur.execute("""SELECT household_id, mailbox_id, kind, channel, status, sent_at, detail
                       FROM notice WHERE household_id = ANY(%s) AND campaign = %s ORDER BY id""",
                    (list(household_ids), campaign))
        for hid, *rest in cur.fetchall():
            out.setdefault(hid, []).append(NoticeRow(*rest))
    return out


def reissue_letters(conn, changed: dict[int, tuple[str, str]]) -> int:
    """A rename target changed after letters named it: the household's letters that went out
    are planned again (detail says why). Returns the number of letters planned again."""
    if not changed:
        return 0
    n = 0
    with conn.cursor() as cur:
        for mid, (old, new) in sorted(changed.items()):
            cur.execute("""UPDATE notice n SET status = 'planned', sent_at = NULL,
                               delivered_at = NULL, acknowledged_at = NULL,
                               detail = coalesce(n.detail, '{}'::jsonb) || jsonb_build_object(
                                   'reissue', %s, 'previous_status', n.status)
                           FROM mailbox m WHERE m.id = %s AND n.household_id = m.household_id
                             AND n.channel = 'letter' AND n.status <> 'planned'""",
                        (f"the new address of mailbox {mid} changed from {old} to {new}", mid))
            n += cur.rowcount
    return n
