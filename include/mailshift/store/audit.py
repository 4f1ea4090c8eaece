"""Audit tables: `audit_run`, `audit_finding`, `address_rename`, `pop3_usage`, `mail_rule`, and
the counts the audit reports show.

Findings are idempotent: each has a dedup key; a run re-sees existing ones and resolves the
open findings of its own source and scope that it no longer sees. What is a finding and whom
it affects is decided in `mailshift.customers.audit`; these functions only read and write rows
and never commit (the audit run is one transaction, opened by its caller).
"""
from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass

from psycopg2.extras import Json, execute_values


@dataclass(frozen=True)
class Finding:
    mailbox_id: int
    kind: str
    detail: str
    data: dict | None = None
    key_extra: str = ""


def _scope_sql(building: str | None, domain: str | None) -> tuple[str, list]:
    if building:
        return "s.building_id = %s", [building]
    if domain:
        return "s.domain = %s", [domain]
    return "true", []


def inventory(conn, building: str | None = None, domain: str | None = None) -> list[tuple]:
    """(mailbox id, address, household, building, source login, source system) in scope."""
    where, params = _scope_sql(building, domain)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT s.mailbox_id, s.address, s.household_id, s.building_id,
                               m.source_login, s.source_system
                        FROM mailbox_scope s JOIN mailbox m ON m.id = s.mailbox_id
                        WHERE {where} ORDER BY s.mailbox_id""", params)
        return cur.fetchall()


def start_run(conn, kind: str, scope: str, inputs=(), created_by: str | None = None) -> int:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO audit_run (kind, scope, inputs, created_by) VALUES (%s,%s,%s,%s)"
                    " RETURNING id", (kind, scope, list(map(str, inputs)),
                                      created_by or getpass.getuser()))
        return cur.fetchone()[0]


def finish_run(conn, run_id: int, stats: dict) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE audit_run SET finished_at = now(), stats = %s WHERE id = %s",
                    (Json(stats), run_id))


def store_findings(conn, source: str, run_id: int, scope_mailboxes: list[int],
                   findings: list[Finding], affects: Callable[[str], bool]) -> dict:
    """Upsert findings (`affects(kind)`: does it change something for the customer); resolve
    open findings of `source` on scope_mailboxes not seen now."""
    keys, rows = [], []
    with conn.cursor() as cur:
        ids = sorted({f.mailbox_id for f in findings})
        owner = {}
        if ids:
            cur.execute("SELECT mailbox_id, household_id, building_id FROM mailbox_scope"
                        " WHERE mailbox_id = ANY(%s)", (ids,))
            owner = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        for f in findings:
            key = f"{source}:{f.mailbox_id}:{f.kind}" + (f":{f.key_extra}" if f.key_extra else "")
            keys.append(key)
            hh, b = owner[f.mailbox_id]
            rows.append((source, f.kind, f.mailbox_id, hh, b, affects(f.kind), f.detail,
                         Json(f.data) if f.data is not None else None, key, run_id, run_id))
        if rows:
            execute_values(cur, """
                INSERT INTO audit_finding (source, kind, mailbox_id, household_id, building_id,
                    affects_customer, detail, data, dedup_key, first_run, last_run) VALUES %s
                ON CONFLICT (dedup_key) DO UPDATE SET detail = EXCLUDED.detail,
                    data = EXCLUDED.data, last_run = EXCLUDED.last_run, last_seen = now(),
                    affects_customer = EXCLUDED.affects_customer,
                    status = 'open', resolved_at = NULL""", rows)
        cur.execute("""UPDATE audit_finding SET status = 'resolved', resolved_at = now()
                       WHERE source = %s AND status = 'open' AND mailbox_id = ANY(%s)
                         AND NOT (dedup_key = ANY(%s))""",
                    (source, scope_mailboxes, keys))
        resolved = cur.rowcount
    return {"findings": len(rows), "resolved": resolved}


# -- address renames ----------------------------------------------------------------------------
def reserved_addresses(conn, excluding_mailboxes: list[int]) -> set[str]:
    """New addresses (lower case) already proposed for mailboxes outside the list."""
    with conn.cursor() as cur:
        cur.execute("SELECT lower(new_address) FROM address_rename WHERE status <> 'cancelled'"
                    " AND NOT (mailbox_id = ANY(%s))", (sorted(excluding_mailboxes),))
        return {r[0] for r in cur.fetchall()}


def save_renames(conn, renames: list, run_id: int, scope_mailboxes: list[int]) -> None:
    """Upsert the proposed renames (a rename past `proposed` keeps its address and alias
    period) and cancel the proposals of scope mailboxes that no longer need one."""
    with conn.cursor() as cur:
        if renames:
            execute_values(cur, """
                INSERT INTO address_rename (mailbox_id, old_address, new_address,
                    alias_until, reasons, run_id) VALUES %s
                ON CONFLICT (mailbox_id) DO UPDATE SET reasons = EXCLUDED.reasons,
                    run_id = EXCLUDED.run_id,
                    old_address = EXCLUDED.old_address,
                    new_address = CASE WHEN address_rename.status = 'proposed'
                        THEN EXCLUDED.new_address ELSE address_rename.new_address END,
                    alias_until = CASE WHEN address_rename.status = 'proposed'
                        THEN EXCLUDED.alias_until ELSE address_rename.alias_until END""",
                [(r.mailbox_id, r.old_address, r.new_address, r.alias_until,
                  list(r.reasons), run_id) for r in renames])
        cur.execute("""UPDATE address_rename SET status = 'cancelled'
                       WHERE status = 'proposed' AND mailbox_id = ANY(%s)
                         AND NOT (mailbox_id = ANY(%s))""",
                    (sorted(scope_mailboxes), [r.mailbox_id for r in renames]))


def renames(conn, building: str | None = None, domain: str | None = None) -> list[dict]:
    """Rename records (old address, new address, alias period) for the copier and reports."""
    where, params = _scope_sql(building, domain)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT r.mailbox_id, r.old_address, r.new_address, r.alias_until,
                               r.reasons, r.status, s.building_id
                        FROM address_rename r JOIN mailbox_scope s ON s.mailbox_id = r.mailbox_id
                        WHERE r.status <> 'cancelled' AND {where} ORDER BY r.mailbox_id""",
                    params)
        cols = ("mailbox_id", "old_address", "new_address", "alias_until", "reasons", "status",
                "building_id")
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# -- POP3 usage and mail rules ------------------------------------------------------------------
def mailboxes_by_login(conn, source_system: str | None = None) -> dict[str, list[int]]:
    """lower(source_login) -> mailbox ids, of one source system or all."""
    by_login: dict[str, list[int]] = {}
    with conn.cursor() as cur:
        cur.execute("""SELECT lower(m.source_login), s.mailbox_id
                       FROM mailbox_scope s JOIN mailbox m ON m.id = s.mailbox_id
                       WHERE %s::text IS NULL OR s.source_system = %s""",
                    (source_system, source_system))
        for login, mid in cur.fetchall():
            by_login.setdefault(login, []).append(mid)
    return by_login


def save_pop3_usage(conn, rows: list[tuple]) -> None:
    """Upsert pop3_usage rows (mailbox_id, logins, apop_logins, last_cmds, uidl_cmds, sessions,
    retr_sessions, keep_sessions, leave_on_server, first_login, last_login, methods, clients,
    formats, run_id); methods/clients as dicts."""
    if not rows:
        return
    rows = [(*r[:11], Json(r[11]), Json(r[12]), *r[13:]) for r in rows]
    with conn.cursor() as cur:
        execute_values(cur, """
            INSERT INTO pop3_usage (mailbox_id, logins, apop_logins, last_cmds, uidl_cmds,
                sessions, retr_sessions, keep_sessions, leave_on_server, first_login,
                last_login, methods, clients, formats, run_id) VALUES %s
            ON CONFLICT (mailbox_id) DO UPDATE SET logins = EXCLUDED.logins,
                apop_logins = EXCLUDED.apop_logins, last_cmds = EXCLUDED.last_cmds,
                uidl_cmds = EXCLUDED.uidl_cmds, sessions = EXCLUDED.sessions,
                retr_sessions = EXCLUDED.retr_sessions,
                keep_sessions = EXCLUDED.keep_sessions,
                leave_on_server = EXCLUDED.leave_on_server,
                first_login = EXCLUDED.first_login, last_login = EXCLUDED.last_login,
                methods = EXCLUDED.methods, clients = EXCLUDED.clients,
                formats = EXCLUDED.formats, run_id = EXCLUDED.run_id""", rows)


def mailboxes_by_name(conn) -> dict[str, int]:
    """Every name a rules export may use for a mailbox (address, source login, destination
    login; lower case) -> mailbox id; the first mailbox wins a shared name."""
    by_name: dict[str, int] = {}
    with conn.cursor() as cur:
        cur.execute("SELECT lower(address), lower(source_login), lower(coalesce(dest_login,"
                    " address)), id FROM mailbox")
        for a, lg, dl, mid in cur.fetchall():
            by_name.setdefault(a, mid)
            by_name.setdefault(lg, mid)
            by_name.setdefault(dl, mid)
    return by_name


def replace_mail_rules(conn, mailbox_ids: list[int], rows: list[tuple]) -> None:
    """The mail_rule rows of these mailboxes become exactly `rows` (mailbox_id, side, kind,
    target, keep_copy, conditional, origin, detail, run_id)."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM mail_rule WHERE mailbox_id = ANY(%s)", (sorted(mailbox_ids),))
        if rows:
            execute_values(cur, """INSERT INTO mail_rule (mailbox_id, side, kind, target,
                keep_copy, conditional, origin, detail, run_id) VALUES %s
                ON CONFLICT DO NOTHING""", rows)


# -- what the notices and reports read ----------------------------------------------------------
def open_customer_findings(conn, *, building: str | None = None,
                           domain: str | None = None) -> list[tuple]:
    """Open findings that change something for the customer, in scope: (household, mailbox,
    address, kind, data, alias_until of the mailbox's rename or None)."""
    if not (building or domain):
        raise ValueError("a building or a domain is required")
    where, params = _scope_sql(building, domain)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT f.household_id, f.mailbox_id, s.address, f.kind, f.data,
                               r.alias_until
                        FROM audit_finding f JOIN mailbox_scope s ON s.mailbox_id = f.mailbox_id
                        LEFT JOIN address_rename r ON r.mailbox_id = f.mailbox_id
                             AND r.status <> 'cancelled'
                        WHERE f.status = 'open' AND f.affects_customer AND {where}
                        ORDER BY f.household_id, f.mailbox_id, f.kind, f.id""", params)
        return cur.fetchall()


#: columns of `report_counts` rows
REPORT_COLUMNS = ("wave", "building_id", "domain", "kind", "open", "resolved", "mailboxes",
                  "households")


def report_counts(conn, *, building: str | None = None, wave: int | None = None) -> list[dict]:
    """Per (building, finding kind): open/resolved findings and the distinct mailboxes and
    households with an open one; per (building, `notice_<channel>_<status>`): notices; per
    building `households_affected`. Rows are dicts over REPORT_COLUMNS, unsorted."""
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
            WHERE {where} GROUP BY 1, 2, 3, 4""", params)
        rows = cur.fetchall()
        cur.execute(f"""
            SELECT b.wave_id, b.id, b.domain, 'notice_' || n.channel || '_' || n.status,
                   count(*), 0, count(DISTINCT n.mailbox_id), count(DISTINCT n.household_id)
            FROM building b JOIN household h ON h.building_id = b.id
            JOIN notice n ON n.household_id = h.id
            WHERE {where} GROUP BY 1, 2, 3, 4""", params)
        rows += cur.fetchall()
        cur.execute(f"""
            SELECT b.wave_id, b.id, b.domain, 'households_affected',
                   count(DISTINCT f.household_id), 0, count(DISTINCT f.mailbox_id),
                   count(DISTINCT f.household_id)
            FROM building b JOIN audit_finding f ON f.building_id = b.id
            WHERE {where} AND f.status = 'open' AND f.affects_customer
            GROUP BY 1, 2, 3""", params)
        rows += cur.fetchall()
    return [dict(zip(REPORT_COLUMNS, r, strict=True)) for r in rows]

