"""The pre-migration audit runs: addresses, POP3 logs and mail rules, from the pure checks
(`addresses`, `pop3logs`, `mail_rules`) to stored findings (`mailshift.store.audit`).

Each run is one transaction and one `audit_run` row; it re-sees the findings still true and
resolves those of its own source and scope that are gone. A finding "affects the customer"
(the notice policy applies, `mailshift.customers.notices`) unless its kind is in NOT_AFFECTING.
"""
from __future__ import annotations

import datetime as _dt

from mailshift.customers import addresses as addr_mod
from mailshift.customers import mail_rules as rules_mod
from mailshift.customers.pop3logs import ParseResult
from mailshift.store import audit as store
from mailshift.store.audit import Finding

# finding kinds that change nothing for the customer (no notice needed)
NOT_AFFECTING = frozenset({"pop3_leave_on_server"})


def affects_customer(kind: str) -> bool:
    return kind not in NOT_AFFECTING


def scope_name(building: str | None, domain: str | None) -> str:
    return f"building:{building}" if building else f"domain:{domain}" if domain else "all"


def run_address_audit(conn, *, building: str | None = None, domain: str | None = None,
                      alias_days: int = addr_mod.DEFAULT_ALIAS_DAYS,
                      today: _dt.date | None = None, created_by: str | None = None) -> dict:
    """Audit the inventory's addresses. Duplicates are checked against the WHOLE inventory (the
    new provider folds case across buildings); findings and renames are stored for the scope."""
    today = today or _dt.date.today()
    with conn:
        rows = store.inventory(conn)
        scope_ids = ({r[0] for r in store.inventory(conn, building, domain)}
                     if (building or domain) else {r[0] for r in rows})
        reserved = store.reserved_addresses(conn, sorted(scope_ids))
        mbs = [addr_mod.MailboxAddress(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        res = addr_mod.audit_addresses(mbs, today=today, alias_days=alias_days, existing=reserved)
        run = store.start_run(conn, "addresses", scope_name(building, domain), (), created_by)
        findings = [Finding(f.mailbox_id, f"address_{f.kind}", f.detail,
                            {"address": f.address, "proposed": f.proposed})
                    for f in res.findings if f.mailbox_id in scope_ids]
        st = store.store_findings(conn, "addresses", run, sorted(scope_ids), findings,
                                  affects_customer)
        renames = [r for r in res.renames if r.mailbox_id in scope_ids]
        store.save_renames(conn, renames, run, sorted(scope_ids))
        stats = {"checked": len(scope_ids), "counts": res.counts(), "renames": len(renames), **st}
        store.finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


def run_pop3_audit(conn, result: ParseResult, *, source_system: str | None = None,
                   inputs=(), created_by: str | None = None) -> dict:
    """Map log logins to mailboxes (source_login, case-insensitive; restricted to one source
    system if given), store pop3_usage and the findings. Logins not in the inventory are
    counted and sampled, never guessed."""
    with conn:
        by_login = store.mailboxes_by_login(conn, source_system)
        run = store.start_run(conn, "pop3_logs", f"source_system:{source_system}" if source_system
                              else "all", inputs, created_by)
        findings, rows, unknown = [], [], []
        for login, u in sorted(result.usage.items()):
            mids = by_login.get(login.lower())
            if not mids:
                unknown.append(login)
                continue
            for mid in mids:
                rows.append((mid, u.logins, u.apop_logins, u.last_cmds, u.uidl_cmds, u.sessions,
                             u.retr_sessions, u.keep_sessions, u.leave_on_server, u.first_login,
                             u.last_login, dict(u.methods), dict(u.clients), sorted(u.formats),
                             run))
                d = u.as_dict()
                findings += [Finding(mid, kind, detail, d) for kind, detail in u.findings()]
        store.save_pop3_usage(conn, rows)
        st = store.store_findings(conn, "pop3_logs", run, sorted({r[0] for r in rows}), findings,
                                  affects_customer)
        stats = {"lines": result.lines, "events": result.events, "ignored": result.ignored,
                 "malformed": result.malformed,
                 "malformed_samples": [s[0] + " " + s[2] for s in result.malformed_samples],
                 "logins": len(result.usage), "unknown_logins": len(unknown),
                 "unknown_sample": unknown[:20], "mailboxes": len(rows), **st}
        store.finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


def _by_mailbox(rules: dict, by_name: dict) -> dict[int, list]:
    out: dict[int, list] = {}
    for name, rs in rules.items():
        if name in by_name:
            out.setdefault(by_name[name], []).extend(rs)
    return out


def run_rules_audit(conn, source_dir, dest_dir=None, *, created_by: str | None = None) -> dict:
    """Inventory the source rules (and the destination's, if exported) and store a finding for
    every source rule whose mail would stop arriving where the customer expects it."""
    src, problems = rules_mod.read_export(source_dir)
    dst, dproblems = rules_mod.read_export(dest_dir) if dest_dir else ({}, [])
    with conn:
        by_name = store.mailboxes_by_name(conn)
        run = store.start_run(conn, "rules", "all", [source_dir] + ([dest_dir] if dest_dir else []),
                              created_by)
        unknown = sorted(n for n in set(src) | set(dst) if n not in by_name)
        src_by_mb, dst_by_mb = _by_mailbox(src, by_name), _by_mailbox(dst, by_name)
        rows = [(mid, side, r.kind, r.target, r.copy, r.conditional, r.origin, r.detail, run)
                for side, d in (("source", src_by_mb), ("dest", dst_by_mb))
                for mid, rs in d.items() for r in rs]
        findings = [Finding(mid, kind, detail, {"rule": r.__dict__},
                            f"{r.kind}:{r.target.lower()}:{r.origin}")
                    for mid, rs in src_by_mb.items()
                    for kind, detail, r in rules_mod.compare(rs, dst_by_mb.get(mid, []))]
        store.replace_mail_rules(conn, sorted(set(src_by_mb) | set(dst_by_mb)), rows)
        st = store.store_findings(conn, "rules", run, sorted(set(src_by_mb)), findings,
                                  affects_customer)
        stats = {"mailboxes": len(src_by_mb), "rules": len(rows), "unknown_dirs": unknown,
                 "problems": problems + dproblems, **st}
        store.finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats
