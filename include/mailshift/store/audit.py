"""Database side of the audits: run the pure audits over the inventory and keep their findings.

Findings are idempotent: each has a dedup key; a run re-sees existing ones and resolves the
open findings of its own source and scope that it no longer sees.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import json
from dataclasses import dataclass

from psycopg2.extras import Json, execute_values

from mailshift.customers import addresses as addr_mod
from mailshift.customers import mail_rules as rules_mod
from mailshift.customers.pop3logs import ParseResult

# finding kind -> does it change something for the customer (notice policy applies)?
NOT_AFFECTING = {"pop3_leave_on_server"}


@dataclass(frozen=True)
class Finding:
    mailbox_id: int
    kind: str
    detail: str
    data: dict | None = None
    key_extra: str = ""


def _scope_sql(building: str | None, domain: str | None) -> tuple[str, list]:
    if building:
        return "b.id = %s", [building]
    if domain:
        return "b.domain = %s", [domain]
    return "true", []


def scope_name(building: str | None, domain: str | None) -> str:
    return f"building:{building}" if building else f"domain:{domain}" if domain else "all"


def inventory(conn, building: str | None = None, domain: str | None = None):
    where, params = _scope_sql(building, domain)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT m.id, m.address, h.id, b.id, m.source_login, b.source_system
                        FROM mailbox m JOIN household h ON h.id = m.household_id
                        JOIN building b ON b.id = h.building_id WHERE {where}
                        ORDER BY m.id""", params)
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
                   findings: list[Finding], affects=None) -> dict:
    """Upsert findings; resolve open findings of `source` on scope_mailboxes not seen now."""
    affects = affects or (lambda kind: kind not in NOT_AFFECTING)
    keys = []
    rows = []
    with conn.cursor() as cur:
        ids = sorted({f.mailbox_id for f in findings})
        owner = {}
        if ids:
            cur.execute("""SELECT m.id, h.id, h.building_id FROM mailbox m
                           JOIN household h ON h.id = m.household_id WHERE m.id = ANY(%s)""",
                        (ids,))
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


# -- addresses ----------------------------------------------------------------------------------
def run_address_audit(conn, *, building: str | None = None, domain: str | None = None,
                      alias_days: int = addr_mod.DEFAULT_ALIAS_DAYS,
                      today: _dt.date | None = None, created_by: str | None = None) -> dict:
    """Audit the inventory's addresses (duplicates are checked against the WHOLE inventory,
    findings stored for the scope). One transaction."""
    today = today or _dt.date.today()
    with conn:
        rows = inventory(conn)
        scope_ids = {r[0] for r in inventory(conn, building, domain)} if (building or domain) \
            else {r[0] for r in rows}
        with conn.cursor() as cur:
            cur.execute("SELECT lower(new_address) FROM address_rename WHERE status <> 'cancelled'"
                        " AND NOT (mailbox_id = ANY(%s))", (sorted(scope_ids),))
            reserved = {r[0] for r in cur.fetchall()}
        mbs = [addr_mod.MailboxAddress(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        res = addr_mod.audit_addresses(mbs, today=today, alias_days=alias_days, existing=reserved)
        run = start_run(conn, "addresses", scope_name(building, domain), (), created_by)
        findings = [Finding(f.mailbox_id, f"address_{f.kind}", f.detail,
                            {"address": f.address, "proposed": f.proposed})
                    for f in res.findings if f.mailbox_id in scope_ids]
        st = store_findings(conn, "addresses", run, sorted(scope_ids), findings)
        renames = [r for r in res.renames if r.mailbox_id in scope_ids]
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
                      list(r.reasons), run) for r in renames])
            cur.execute("""UPDATE address_rename SET status = 'cancelled'
                           WHERE status = 'proposed' AND mailbox_id = ANY(%s)
                             AND NOT (mailbox_id = ANY(%s))""",
                        (sorted(scope_ids), [r.mailbox_id for r in renames]))
        stats = {"checked": len(scope_ids), "counts": res.counts(), "renames": len(renames), **st}
        finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


def renames(conn, building: str | None = None, domain: str | None = None) -> list[dict]:
    """Rename records (old address, new address, alias period) for the copier and reports."""
    where, params = _scope_sql(building, domain)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT r.mailbox_id, r.old_address, r.new_address, r.alias_until,
                               r.reasons, r.status, b.id
                        FROM address_rename r JOIN mailbox m ON m.id = r.mailbox_id
                        JOIN household h ON h.id = m.household_id
                        JOIN building b ON b.id = h.building_id
                        WHERE r.status <> 'cancelled' AND {where} ORDER BY r.mailbox_id""",
                    params)
        cols = ("mailbox_id", "old_address", "new_address", "alias_until", "reasons", "status",
                "building_id")
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# -- POP3 logs ----------------------------------------------------------------------------------
def store_pop3_usage(conn, result: ParseResult, *, source_system: str | None = None,
                     inputs=(), created_by: str | None = None) -> dict:
    """Map log logins to mailboxes (source_login, case-insensitive; restricted to one source
    system if given), store pop3_usage and the findings. Logins not in the inventory are
    counted and sampled."""
    with conn:
        with conn.cursor() as cur:
            cur.execute("""SELECT lower(m.source_login), m.id FROM mailbox m
                           JOIN household h ON h.id = m.household_id
                           JOIN building b ON b.id = h.building_id
                           WHERE %s::text IS NULL OR b.source_system = %s""",
                        (source_system, source_system))
            by_login: dict[str, list[int]] = {}
            for login, mid in cur.fetchall():
                by_login.setdefault(login, []).append(mid)
        run = start_run(conn, "pop3_logs", f"source_system:{source_system}" if source_system
                        else "all", inputs, created_by)
        findings, rows, unknown = [], [], []
        for login, u in sorted(result.usage.items()):
            mids = by_login.get(login.lower())
            if not mids:
                unknown.append(login)
                continue
            for mid in mids:
                d = u.as_dict()
                rows.append((mid, u.logins, u.apop_logins, u.last_cmds, u.uidl_cmds, u.sessions,
                             u.retr_sessions, u.keep_sessions, u.leave_on_server, u.first_login,
                             u.last_login, Json(dict(u.methods)), Json(dict(u.clients)),
                             sorted(u.formats), run))
                for kind, detail in u.findings():
                    findings.append(Finding(mid, kind, detail, d))
        with conn.cursor() as cur:
            if rows:
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
        st = store_findings(conn, "pop3_logs", run, sorted({r[0] for r in rows}), findings)
        stats = {"lines": result.lines, "events": result.events, "ignored": result.ignored,
                 "malformed": result.malformed,
                 "malformed_samples": [s[0] + " " + s[2] for s in result.malformed_samples],
                 "logins": len(result.usage), "unknown_logins": len(unknown),
                 "unknown_sample": unknown[:20], "mailboxes": len(rows), **st}
        finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


# -- rules --------------------------------------------------------------------------------------
def store_rules(conn, source_dir, dest_dir=None, *, created_by: str | None = None) -> dict:
    """Inventory the source rules (and the destination's, if exported) and store the findings
    of every source rule that would stop delivering."""
    src, problems = rules_mod.read_export(source_dir)
    dst, dproblems = rules_mod.read_export(dest_dir) if dest_dir else ({}, [])
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT lower(address), lower(source_login), lower(coalesce(dest_login,"
                        " address)), id FROM mailbox")
            by_name: dict[str, int] = {}
            for a, lg, dl, mid in cur.fetchall():
                by_name.setdefault(a, mid)
                by_name.setdefault(lg, mid)
                by_name.setdefault(dl, mid)
        run = start_run(conn, "rules", "all", [source_dir] + ([dest_dir] if dest_dir else []),
                        created_by)
        unknown = sorted(n for n in set(src) | set(dst) if n not in by_name)
        src_by_mb: dict[int, list] = {}
        dst_by_mb: dict[int, list] = {}
        for n, rs in src.items():
            if n in by_name:
                src_by_mb.setdefault(by_name[n], []).extend(rs)
        for n, rs in dst.items():
            if n in by_name:
                dst_by_mb.setdefault(by_name[n], []).extend(rs)
        rows, findings = [], []
        for side, d in (("source", src_by_mb), ("dest", dst_by_mb)):
            for mid, rs in d.items():
                for r in rs:
                    rows.append((mid, side, r.kind, r.target, r.copy, r.conditional, r.origin,
                                 r.detail, run))
        for mid, rs in src_by_mb.items():
            for kind, detail, r in rules_mod.compare(rs, dst_by_mb.get(mid, [])):
                findings.append(Finding(mid, kind, detail, {"rule": r.__dict__},
                                        f"{r.kind}:{r.target.lower()}:{r.origin}"))
        with conn.cursor() as cur:
            mids = sorted(set(src_by_mb) | set(dst_by_mb))
            cur.execute("DELETE FROM mail_rule WHERE mailbox_id = ANY(%s)", (mids,))
            if rows:
                execute_values(cur, """INSERT INTO mail_rule (mailbox_id, side, kind, target,
                    keep_copy, conditional, origin, detail, run_id) VALUES %s
                    ON CONFLICT DO NOTHING""", rows)
        st = store_findings(conn, "rules", run, sorted(set(src_by_mb)), findings)
        stats = {"mailboxes": len(src_by_mb), "rules": len(rows), "unknown_dirs": unknown,
                 "problems": problems + dproblems, **st}
        finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


def dumps(obj) -> str:
    return json.dumps(obj, default=str, ensure_ascii=False, indent=2)
