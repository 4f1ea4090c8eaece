"""The pre-migration audit runs: addresses, POP3 logs and mail rules, from the pure checks
(`addresses`, `pop3logs`, `mail_rules`) to stored findings (`mailshift.store.audit`).

Each run is one transaction and one `audit_run` row; it re-sees the findings still true and
resolves those of its own source and scope that are gone. A finding "affects the customer"
(the notice policy applies, `mailshift.customers.notices`) unless its kind is in NOT_AFFECTING;
those (leave-on-server, yes or unknown) affect the customer only where the destination does not
keep POP3 UIDLs (or nobody probed it), decided by `notices.households` when it reads them.
An unknown (`*_unknown`) affects the customer unless a person waived it by name (`waive`).

Renames never point at another customer: a proposal avoids every address another mailbox
holds or plans (address, destination login, earlier proposals), whole inventory, every run; a
proposal that now collides is changed and the household's letters are planned again.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from mailshift.customers import addresses as addr_mod
from mailshift.customers import mail_rules as rules_mod
from mailshift.customers.pop3logs import FACTS, UNKNOWN, Fact, ParseResult
from mailshift.errors import UnknownScope, WaiverError
from mailshift.store import audit as store
from mailshift.store import notices as notice_store
from mailshift.store.audit import Finding

# finding kinds that change nothing for the customer by themselves: they matter only when the
# destination does not keep POP3 UIDLs (`notices.households` decides, with the probe's answer)
UIDL_DEPENDENT = frozenset({"pop3_leave_on_server", "pop3_leave_on_server_unknown"})
NOT_AFFECTING = UIDL_DEPENDENT


def affects_customer(kind: str) -> bool:
    return kind not in NOT_AFFECTING


def scope_name(building: str | None, domain: str | None) -> str:
    return f"building:{building}" if building else f"domain:{domain}" if domain else "all"


def require_scope(conn, **scope) -> None:
    """UnknownScope (exit 2) when a named building / domain / wave / source system does not
    exist: a typo must never read as "nothing to do"."""
    for key, value in scope.items():
        if value is not None and not store.scope_exists(conn, **{key: value}):
            raise UnknownScope(f"unknown {key.replace('_', ' ')} {value!r}: not in the inventory")


def run_address_audit(conn, *, building: str | None = None, domain: str | None = None,
                      alias_days: int = addr_mod.DEFAULT_ALIAS_DAYS,
                      today: _dt.date | None = None, created_by: str | None = None) -> dict:
    """Audit the inventory's addresses. Duplicates are checked against the WHOLE inventory (the
    new provider folds case across buildings); findings and renames are stored for the scope."""
    today = today or _dt.date.today()
    with conn:
        require_scope(conn, building=building, domain=domain)
        rows = store.inventory(conn)
        scope_ids = ({r[0] for r in store.inventory(conn, building, domain)}
                     if (building or domain) else {r[0] for r in rows})
        holders: dict[str, set[int]] = {}
        for mid, addrs in store.planned_addresses(conn).items():
            for a in addrs:
                holders.setdefault(a, set()).add(mid)
        mbs = [addr_mod.MailboxAddress(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        res = addr_mod.audit_addresses(mbs, today=today, alias_days=alias_days, holders=holders,
                                       previous=store.rename_state(conn, sorted(scope_ids)))
        run = store.start_run(conn, "addresses", scope_name(building, domain), (), created_by)
        findings = [Finding(f.mailbox_id, f"address_{f.kind}", f.detail,
                            {"address": f.address, "proposed": f.proposed})
                    for f in res.findings if f.mailbox_id in scope_ids]
        st = store.store_findings(conn, "addresses", run, sorted(scope_ids), findings,
                                  affects_customer)
        renames = [r for r in res.renames if r.mailbox_id in scope_ids]
        changed = store.save_renames(conn, renames, run, sorted(scope_ids))
        reissued = notice_store.reissue_letters(conn, {mid: (old, new) for mid, old, new in changed})
        stats = {"checked": len(scope_ids), "counts": res.counts(), "renames": len(renames),
                 "renames_changed": [{"mailbox_id": m, "was": o, "now": n} for m, o, n in changed],
                 "letters_reissued": reissued, **st}
        store.finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


def _fact_rows(result: ParseResult, by_login: dict, run: int):
    """(usage rows, fact rows, findings, unknown logins) of a parse result."""
    findings, rows, facts, unknown = [], [], [], []
    for login, u in sorted(result.usage.items()):
        mids = by_login.get(login.lower())
        if not mids:
            unknown.append(login)
            continue
        d = u.as_dict()
        for mid in mids:
            rows.append((mid, u.logins, u.apop_logins, u.last_cmds, u.uidl_cmds, u.sessions,
                         u.retr_sessions, u.keep_sessions, u.leave_on_server, u.first_login,
                         u.last_login, dict(u.methods), dict(u.clients), sorted(u.formats),
                         run))
            facts += [(mid, name, *f, run) for name, f in u.facts().items()]
            findings += [Finding(mid, kind, detail, d) for kind, detail in u.findings()]
    return rows, facts, findings, unknown


def _unseen(mailbox_ids: list[int], n_inputs: int, run: int):
    """Facts and findings of POP3 mailboxes the logs never mention: everything unknown."""
    why = f"no POP3 session of this login in the {n_inputs} input(s) read"
    facts = [(mid, name, *Fact(UNKNOWN, why, ""), run) for mid in mailbox_ids for name in FACTS]
    findings = [Finding(mid, f"pop3_{name}_unknown", why, {"facts": {name: UNKNOWN}})
                for mid in mailbox_ids for name in FACTS if name != "uidl"]
    return facts, findings


def run_pop3_audit(conn, result: ParseResult, *, source_system: str | None = None,
                   inputs=(), created_by: str | None = None) -> dict:
    """Map log logins to mailboxes (source_login, case-insensitive; restricted to one source
    system if given), store pop3_usage, the three-valued facts and the findings (yes and
    unknown). With a source system, its POP3 mailboxes the logs never mention get unknown
    facts too. Logins not in the inventory are counted and sampled, never guessed."""
    with conn:
        require_scope(conn, source_system=source_system)
        by_login = store.mailboxes_by_login(conn, source_system)
        run = store.start_run(conn, "pop3_logs", f"source_system:{source_system}" if source_system
                              else "all", inputs, created_by)
        rows, facts, findings, unknown = _fact_rows(result, by_login, run)
        seen = {r[0] for r in rows}
        unseen = [mid for mid in store.pop3_mailboxes(conn, source_system) if mid not in seen] \
            if source_system else []
        more_facts, more_findings = _unseen(unseen, len(result.by_file) or len(inputs), run)
        store.save_pop3_usage(conn, rows)
        store.save_pop3_facts(conn, facts + more_facts)
        st = store.store_findings(conn, "pop3_logs", run, sorted(seen | set(unseen)),
                                  findings + more_findings, affects_customer)
        stats = {"lines": result.lines, "events": result.events, "ignored": result.ignored,
                 "malformed": result.malformed,
                 "malformed_samples": [s[0] + " " + s[2] for s in result.malformed_samples],
                 "files": {f: vars(fs) for f, fs in result.by_file.items()},
                 "logins": len(result.usage), "unknown_logins": len(unknown),
                 "unknown_sample": unknown[:20], "mailboxes": len(rows),
                 "unseen_pop3_mailboxes": len(unseen), "facts": _fact_counts(facts + more_facts),
                 **st}
        store.finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


def _fact_counts(facts: list[tuple]) -> dict:
    out: dict[str, dict[str, int]] = {}
    for _mid, name, value, *_ in facts:
        out.setdefault(name, {}).setdefault(value, 0)
        out[name][value] += 1
    return out


def waive(conn, kind: str, *, building: str, by: str, reason: str,
          mailbox: str | None = None) -> dict:
    """A person accepts an unknown (`pop3_last_unknown`, ...) for a building or one mailbox of
    it: the notice policy no longer counts it. Named and reasoned, or WaiverError."""
    if not kind.endswith("_unknown"):
        raise WaiverError(f"{kind!r}: only unknowns (kinds ending in _unknown) can be waived; "
                          "a known use is told to the customer")
    if not (by or "").strip() or not (reason or "").strip():
        raise WaiverError("a waiver needs the name of the person (--by) and a reason")
    with conn:
        require_scope(conn, building=building)
        mid = None
        if mailbox:
            mid = store.building_mailbox(conn, building, mailbox)
            if mid is None:
                raise UnknownScope(f"no mailbox {mailbox!r} in building {building!r}")
        wid = store.add_waiver(conn, building, mid, kind, by.strip(), reason.strip())
    return {"waiver_id": wid, "building": building, "mailbox_id": mid, "kind": kind, "by": by}


def _by_mailbox(rules: dict, by_name: dict) -> dict[int, list]:
    out: dict[int, list] = {}
    for name, rs in rules.items():
        if name in by_name:
            out.setdefault(by_name[name], []).extend(rs)
    return out


def run_rules_audit(conn, source_dir, dest_dir=None, *, created_by: str | None = None,
                    moved: dict | None = None) -> dict:
    """Inventory the source rules (and the destination's, if exported) and store a finding for
    every source rule whose mail would stop arriving where the customer expects it. `moved`
    (from `move_rules`): {mailbox id: (scripts installed, [(rule, why not movable)])}; a rule
    that could not move (other than a program, already a finding) is `rule_not_movable`."""
    for d in (source_dir, dest_dir):
        if d is not None and not Path(d).is_dir():
            raise UnknownScope(f"rules export {d}: no such directory")
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
        findings += [Finding(mid, "rule_not_movable", f"{why} ({r.origin})", {"rule": r.__dict__},
                             f"not_movable:{r.origin}")
                     for mid, (_s, nm) in (moved or {}).items() for r, why in nm
                     if r.kind != "program"]
        if moved is not None:
            store.save_rule_moves(conn, sorted(moved), [
                (mid, name, "installed", "", text, run)
                for mid, (scripts, _nm) in moved.items() for name, text in scripts.items()] + [
                (mid, r.origin, "not_movable", why, "", run)
                for mid, (_s, nm) in moved.items() for r, why in nm])
        store.replace_mail_rules(conn, sorted(set(src_by_mb) | set(dst_by_mb)), rows)
        st = store.store_findings(conn, "rules", run, sorted(set(src_by_mb)), findings,
                                  affects_customer)
        stats = {"mailboxes": len(src_by_mb), "rules": len(rows), "unknown_dirs": unknown,
                 "problems": problems + dproblems, **st}
        store.finish_run(conn, run, stats)
    stats["run_id"] = run
    return stats


def _mailbox_dirs(source_dir, by_name: dict) -> dict[int, Path]:
    return {by_name[d.name.lower()]: d for d in sorted(Path(source_dir).iterdir())
            if d.is_dir() and d.name.lower() in by_name}


def _install(endpoint, port: int, login: str, d: Path, out: Path) -> tuple[dict, list]:
    """Translate one mailbox's rules, install them over ManageSieve, make MAIN active, and
    write back what the server now runs (the active script and its includes) into `out`."""
    from mailshift.customers import rule_move
    from mailshift.protocols.managesieve import SieveSession

    with SieveSession(endpoint, login, port) as s:
        t = rule_move.translate(d, d.name.split("@", 1)[0], s.extensions())
        for name, text in list(t.scripts.items()):
            why = s.check(text)
            if why:      # the server refuses it as it is: its rules are translated instead
                del t.scripts[name]
                t.not_movable += [(r, f"the destination refuses the script: {why}")
                                  for r in rules_mod.parse_sieve(text, f"{d.name}/{name}")
                                  if r.kind in rules_mod.DELIVERING]
            else:
                s.put(name, text)
        installed = {**t.scripts, rule_move.MAIN: t.main()}
        s.put(rule_move.MAIN, installed[rule_move.MAIN])
        s.activate(rule_move.MAIN)
        active, _others = s.scripts()
        out.mkdir(parents=True, exist_ok=True)
        for name in [active] + rule_move.included(s.get(active)):
            (out / f"{name}.sieve").write_text(s.get(name), encoding="utf-8")
    return installed, t.not_movable


def move_rules(conn, source_dir, endpoint, *, port: int, work_dir,
               created_by: str | None = None) -> dict:
    """Install every mailbox's legacy rules at the destination (ManageSieve), read them back,
    and compare (`run_rules_audit` with the read-back as the destination side)."""
    if not Path(source_dir).is_dir():
        raise UnknownScope(f"rules export {source_dir}: no such directory")
    with conn:
        by_name = store.mailboxes_by_name(conn)
        dirs = _mailbox_dirs(source_dir, by_name)
        accounts = store.mailbox_accounts(conn, sorted(dirs))
    dest_dir = Path(work_dir) / "dest-readback"
    moved = {mid: _install(endpoint, port, accounts[mid][1], d, dest_dir / d.name)
             for mid, d in dirs.items()}
    stats = run_rules_audit(conn, source_dir, dest_dir, created_by=created_by, moved=moved)
    stats["installed"] = {accounts[m][1]: sorted(s) for m, (s, _n) in moved.items()}
    stats["not_movable"] = [{"mailbox": accounts[m][1], "rule": r.origin, "why": why}
                            for m, (_s, nm) in moved.items() for r, why in nm]
    return stats
