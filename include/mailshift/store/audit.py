"""Audit tables: `audit_run`, `audit_finding`, `address_rename`, `pop3_usage`, `pop3_fact`,
`audit_waiver`, `dest_capability`, `mail_rule`, `mail_rule_move`, and the counts the audit
reports show.

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


def scope_exists(conn, *, building: str | None = None, domain: str | None = None,
                 wave: int | None = None, source_system: str | None = None) -> bool:
    """Does the named building / domain / wave / source system exist in the inventory?"""
    table, value = next((t, v) for t, v in (("building", building), ("domain", domain),
                                            ("wave", wave), ("source_system", source_system),
                                            ("", None)) if v is not None or not t)
    if not table:
        return True
    col = "name" if table == "domain" else "id"
    with conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM {table} WHERE {col} = %s", (value,))
        return cur.fetchone() is not None


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


def planned_addresses(conn) -> dict[int, set[str]]:
    """Per mailbox, every address it holds or will hold (lower case): its address, its
    destination login, its non-cancelled rename target; a proposal must avoid other mailboxes'."""
    out: dict[int, set[str]] = {}
    with conn.cursor() as cur:
        cur.execute("""SELECT m.id, lower(m.address), lower(coalesce(m.dest_login, m.address)),
                              lower(r.new_address)
                       FROM mailbox m LEFT JOIN address_rename r ON r.mailbox_id = m.id
                            AND r.status <> 'cancelled'""")
        for mid, a, dl, new in cur.fetchall():
            out[mid] = {x for x in (a, dl if "@" in dl else None, new) if x}
    return out


def rename_state(conn, mailbox_ids: list[int]) -> dict[int, tuple[str, str]]:
    """mailbox id -> (new address, status) of its rename record, any status."""
    with conn.cursor() as cur:
        cur.execute("SELECT mailbox_id, new_address, status FROM address_rename"
                    " WHERE mailbox_id = ANY(%s)", (sorted(mailbox_ids),))
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}


def save_renames(conn, renames: list, run_id: int, scope_mailboxes: list[int]) -> list[tuple]:
    """Upsert the proposed renames (a rename past `proposed` keeps its address and alias
    period; a cancelled one comes back as proposed) and cancel the proposals of scope mailboxes
    that no longer need one. Rows whose target changes are first taken out of the unique index
    (status cancelled) so that two proposals may swap targets in one run. Returns the changed
    proposals: (mailbox id, old target, new target)."""
    before = rename_state(conn, [r.mailbox_id for r in renames])
    changed = [(r.mailbox_id, before[r.mailbox_id][0], r.new_address) for r in renames
               if r.mailbox_id in before and before[r.mailbox_id][1] in ("proposed", "cancelled")
               and before[r.mailbox_id][0].lower() != r.new_address.lower()]
    with conn.cursor() as cur:
        cur.execute("""UPDATE address_rename SET status = 'cancelled'
                       WHERE status = 'proposed' AND mailbox_id = ANY(%s)""",
                    ([c[0] for c in changed] + [mid for mid in scope_mailboxes
                                                if mid not in {r.mailbox_id for r in renames}],))
        if renames:
            execute_values(cur, """
                INSERT INTO address_rename (mailbox_id, old_address, new_address,
                    alias_until, reasons, run_id) VALUES %s
                ON CONFLICT (mailbox_id) DO UPDATE SET reasons = EXCLUDED.reasons,
                    run_id = EXCLUDED.run_id,
                    old_address = EXCLUDED.old_address,
                    previous_addresses = CASE WHEN address_rename.status IN
                        ('proposed', 'cancelled') AND lower(address_rename.new_address)
                        <> lower(EXCLUDED.new_address) THEN address_rename.previous_addresses
                        || address_rename.new_address ELSE address_rename.previous_addresses END,
                    new_address = CASE WHEN address_rename.status IN ('proposed', 'cancelled')
                        THEN EXCLUDED.new_address ELSE address_rename.new_address END,
                    alias_until = CASE WHEN address_rename.status IN ('proposed', 'cancelled')
                        THEN EXCLUDED.alias_until ELSE address_rename.alias_until END,
                    status = CASE WHEN address_rename.status = 'cancelled' THEN 'proposed'
                        ELSE address_rename.status END""",
                [(r.mailbox_id, r.old_address, r.new_address, r.alias_until,
                  list(r.reasons), run_id) for r in renames])
    return changed


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


def save_pop3_facts(conn, rows: list[tuple]) -> None:
    """Upsert pop3_fact rows (mailbox_id, fact, value, evidence, source, run_id)."""
    if not rows:
        return
    with conn.cursor() as cur:
        execute_values(cur, """
            INSERT INTO pop3_fact (mailbox_id, fact, value, evidence, source, run_id) VALUES %s
            ON CONFLICT (mailbox_id, fact) DO UPDATE SET value = EXCLUDED.value,
                evidence = EXCLUDED.evidence, source = EXCLUDED.source,
                run_id = EXCLUDED.run_id, updated_at = now()""", rows)


def pop3_facts(conn, mailbox_ids: list[int]) -> dict[int, dict[str, tuple[str, str, str]]]:
    """mailbox id -> {fact: (value, evidence, source)}."""
    out: dict[int, dict[str, tuple[str, str, str]]] = {}
    with conn.cursor() as cur:
        cur.execute("SELECT mailbox_id, fact, value, evidence, source FROM pop3_fact"
                    " WHERE mailbox_id = ANY(%s)", (sorted(mailbox_ids),))
        for mid, fact, *rest in cur.fetchall():
            out.setdefault(mid, {})[fact] = tuple(rest)
    return out


def pop3_mailboxes(conn, source_system: str) -> list[int]:
    """The POP3 mailboxes (protocol pop3) of one source system."""
    with conn.cursor() as cur:
        cur.execute("""SELECT s.mailbox_id FROM mailbox_scope s JOIN mailbox m
                       ON m.id = s.mailbox_id WHERE s.source_system = %s AND m.protocol = 'pop3'
                       ORDER BY 1""", (source_system,))
        return [r[0] for r in cur.fetchall()]


def building_mailbox(conn, building: str, address: str) -> int | None:
    with conn.cursor() as cur:
        cur.execute("SELECT mailbox_id FROM mailbox_scope WHERE building_id = %s"
                    " AND lower(address) = lower(%s)", (building, address))
        row = cur.fetchone()
        return row[0] if row else None


def add_waiver(conn, building: str, mailbox_id: int | None, kind: str, by: str,
               reason: str) -> int:
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO audit_waiver (building_id, mailbox_id, kind, waived_by, reason)
                       VALUES (%s, %s, %s, %s, %s)
                       ON CONFLICT (building_id, coalesce(mailbox_id, 0), kind) DO UPDATE SET
                           waived_by = EXCLUDED.waived_by, reason = EXCLUDED.reason,
                           created_at = now()
                       RETURNING id""", (building, mailbox_id, kind, by, reason))
        return cur.fetchone()[0]


def waivers(conn, *, building: str | None = None, domain: str | None = None
            ) -> dict[tuple[str, int | None, str], str]:
    """(building, mailbox id or None, kind) -> who waived it, for the buildings in scope."""
    where, params = ("b.id = %s", [building]) if building else ("b.domain = %s", [domain])
    with conn.cursor() as cur:
        cur.execute(f"""SELECT w.building_id, w.mailbox_id, w.kind, w.waived_by
                        FROM audit_waiver w JOIN building b ON b.id = w.building_id
                        WHERE {where}""", params)
        return {(r[0], r[1], r[2]): r[3] for r in cur.fetchall()}


# -- the destination's capabilities (preflight probe) -------------------------------------------
CAPABILITY_COLUMNS = ("destination", "keeps_uidl", "uidl_detail", "appendlimit", "folder_rules",
                      "size_behaviour", "quota_behaviour", "test_account", "probed_by",
                      "probed_at")


def save_capability(conn, cap: dict) -> None:
    cols = CAPABILITY_COLUMNS[:-1]
    vals = [Json(cap.get(c) or {}) if c in ("folder_rules", "size_behaviour", "quota_behaviour")
            else cap.get(c) for c in cols]
    with conn.cursor() as cur:
        cur.execute(f"""INSERT INTO dest_capability ({", ".join(cols)})
                        VALUES ({", ".join(["%s"] * len(cols))})
                        ON CONFLICT (destination) DO UPDATE SET
                        {", ".join(f"{c} = EXCLUDED.{c}" for c in cols[1:])},
                        probed_at = now()""", vals)


def capability(conn, destination: str) -> dict | None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(CAPABILITY_COLUMNS)} FROM dest_capability"
                    " WHERE destination = %s", (destination,))
        row = cur.fetchone()
        return dict(zip(CAPABILITY_COLUMNS, row, strict=True)) if row else None


def mailbox_accounts(conn, mailbox_ids: list[int]) -> dict[int, tuple[str, str, str]]:
    """mailbox id -> (address after its rename, destination login, protocol) for the
    client-settings kit."""
    with conn.cursor() as cur:
        cur.execute("""SELECT m.id, coalesce(r.new_address, m.address),
                              CASE WHEN r.new_address IS NOT NULL AND (m.dest_login IS NULL
                                        OR lower(m.dest_login) = lower(m.address))
                                   THEN r.new_address ELSE coalesce(m.dest_login, m.address) END,
                              m.protocol
                       FROM mailbox m LEFT JOIN address_rename r ON r.mailbox_id = m.id
                            AND r.status <> 'cancelled'
                       WHERE m.id = ANY(%s)""", (sorted(mailbox_ids),))
        return {r[0]: tuple(r[1:]) for r in cur.fetchall()}


def save_rule_moves(conn, mailbox_ids: list[int], rows: list[tuple]) -> None:
    """The mail_rule_move rows of these mailboxes become `rows` (mailbox_id, script_name,
    status, detail, script, run_id)."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM mail_rule_move WHERE mailbox_id = ANY(%s)", (sorted(mailbox_ids),))
        if rows:
            execute_values(cur, """INSERT INTO mail_rule_move (mailbox_id, script_name, status,
                detail, script, run_id) VALUES %s ON CONFLICT DO NOTHING""", rows)


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
def open_customer_findings(conn, *, building: str | None = None, domain: str | None = None,
                           also_kinds: tuple[str, ...] = ()) -> list[tuple]:
    """Open findings that change something for the customer (or whose kind is in `also_kinds`),
    in scope: (household, mailbox, address, kind, data, alias_until of the mailbox's rename or
    None, building, the rename's new address or None)."""
    if not (building or domain):
        raise ValueError("a building or a domain is required")
    where, params = _scope_sql(building, domain)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT f.household_id, f.mailbox_id, s.address, f.kind, f.data,
                               r.alias_until, s.building_id, r.new_address
                        FROM audit_finding f JOIN mailbox_scope s ON s.mailbox_id = f.mailbox_id
                        LEFT JOIN address_rename r ON r.mailbox_id = f.mailbox_id
                             AND r.status <> 'cancelled'
                        WHERE f.status = 'open' AND (f.affects_customer OR f.kind = ANY(%s))
                          AND {where}
                        ORDER BY f.household_id, f.mailbox_id, f.kind, f.id""",
                    [list(also_kinds), *params])
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
        cur.execute(f"""
            SELECT b.wave_id, b.id, b.domain, 'fact_' || p.fact || '_' || p.value,
                   count(*), 0, count(DISTINCT p.mailbox_id), count(DISTINCT s.household_id)
            FROM building b JOIN mailbox_scope s ON s.building_id = b.id
            JOIN pop3_fact p ON p.mailbox_id = s.mailbox_id
            WHERE {where} GROUP BY 1, 2, 3, 4""", params)
        rows += cur.fetchall()
        cur.execute(f"""
            SELECT b.wave_id, b.id, b.domain, 'waived_' || w.kind, count(*), 0,
                   count(w.mailbox_id), 0
            FROM building b JOIN audit_waiver w ON w.building_id = b.id
            WHERE {where} GROUP BY 1, 2, 3, 4""", params)
        rows += cur.fetchall()
    return [dict(zip(REPORT_COLUMNS, r, strict=True)) for r in rows]

