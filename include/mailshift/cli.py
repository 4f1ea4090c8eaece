"""`mailshift ...`: the operator's command line. Every command prints a clear error and exits
non-zero on bad input; machine-readable output is JSON on stdout, progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from mailshift.store import db


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


# -- db ---------------------------------------------------------------------------------------
def cmd_db_upgrade(args) -> int:
    from mailshift.store import migrate

    applied = migrate.upgrade(args.db)
    print("applied: " + (", ".join(applied) if applied else "nothing (already current)"))
    print(f"current: {migrate.current(args.db)}")
    return 0


def cmd_db_status(args) -> int:
    from mailshift.store import migrate

    _print_json(migrate.status(args.db))
    return 0


# -- inventory --------------------------------------------------------------------------------
def cmd_inventory_load(args) -> int:
    from mailshift.inventory.load import InventoryError, load_inventory

    conn = db.connect(args.db)
    try:
        report = load_inventory(conn, args.export_dir)
    except InventoryError as exc:
        print(f"inventory NOT loaded (nothing was written):\n{exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(report)
    return 0


# -- status -----------------------------------------------------------------------------------
STATUS_SQL = {
    "source_systems": "SELECT count(*) FROM source_system",
    "domains": "SELECT count(*) FROM domain",
    "buildings": "SELECT count(*) FROM building",
    "households": "SELECT count(*) FROM household",
    "mailboxes": "SELECT count(*) FROM mailbox",
}


def status_report(conn) -> dict:
    """Inventory counts, ledger state counts and the latest pass per mailbox."""
    out = {}
    with conn, conn.cursor() as cur:
        for key, sql in STATUS_SQL.items():
            cur.execute(sql)
            out[key] = cur.fetchone()[0]
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


def cmd_status(args) -> int:
    conn = db.connect(args.db)
    try:
        report = status_report(conn)
    finally:
        conn.close()
    if args.json:
        _print_json(report)
        return 0
    print(f"inventory: {report['source_systems']} source systems, {report['domains']} domains, "
          f"{report['buildings']} buildings, {report['households']} households, {report['mailboxes']} mailboxes")
    print(f"mailboxes with a finished pass: {report['mailboxes_with_a_finished_pass']}")
    print("ledger:")
    for name, v in report["messages"].items():
        print(f"  {name:<16} {v['count']:>10} messages {v['bytes'] / 1e6:>12.1f} MB")
    for p in report["passes"]:
        print(f"  pass {p['kind']:<9} {p['status']:<9} {p['count']}")
    return 0


# -- progress mirrors of the operator UI: status --progress, lookup, report -------------------
def _write_csv(rows: list[dict], columns: list[str]) -> None:
    import csv

    w = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


PROGRESS_COLUMNS = ["wave", "name", "status", "buildings", "mailboxes", "mailboxes_copied", "mailboxes_proven",
                    "unproven_mailboxes", "messages_copied", "messages_total", "bytes_copied", "bytes_total",
                    "bytes_per_s", "eta", "eta_note"]


def cmd_status_progress(args) -> int:
    from mailshift.progress import queries
    from mailshift.store import progress as store

    conn = db.connect(args.db)
    try:
        if not args.no_refresh:
            store.refresh_changed(conn)
        ov = queries.overview(conn)
    finally:
        conn.close()
    if args.csv:
        _write_csv(ov["waves"], PROGRESS_COLUMNS)
        return 0
    if args.json:
        for w in ov["waves"]:
            w.pop("series", None)
        ov["throughput"].pop("history", None)
        _print_json({"progress": ov})
        return 0
    t = ov["totals"]
    print(f"mailboxes copied {t['mailboxes_copied']}/{t['mailboxes']}, proven {t['mailboxes_proven']}, "
          f"unproven {t['unproven_mailboxes']}; messages {t['messages_copied']}/{t['messages_total']}; "
          f"{t['bytes_copied'] / 1e6:.1f}/{t['bytes_total'] / 1e6:.1f} MB; open exceptions {t['open_exceptions']}")
    tp = ov["throughput"]
    print(f"throughput (last {tp['window_minutes']} min): {tp['bytes_per_s'] / 1e6:.2f} MB/s, "
          f"{tp['messages_per_s']:.1f} msg/s, {tp['running_passes']} passes running")
    for w in ov["waves"]:
        states = ", ".join(f"{k} {v}" for k, v in w["buildings_by_state"].items() if v)
        print(f"  {w['name']:<12} {w['status']:<9} buildings {w['buildings']} ({states}); mailboxes "
              f"{w['mailboxes_copied']}/{w['mailboxes']} copied, {w['mailboxes_proven']} proven; "
              f"{w['bytes_copied'] / 1e6:.1f}/{w['bytes_total'] / 1e6:.1f} MB; ETA {w['eta'] or '-'} ({w['eta_note']})")
    return 0


LOOKUP_COLUMNS = ["household_id", "contact_name", "building_id", "domain", "wave_id", "address", "protocol",
                  "migrated", "first_copied_at", "last_copied_at", "last_pass", "messages_copied", "proof_state",
                  "proven_at", "open_exceptions", "notices_sent", "cutover_at"]


def cmd_lookup(args) -> int:
    """Support desk: a household by mailbox address (or its beginning) or household ID."""
    from mailshift.progress import queries

    conn = db.connect(args.db)
    try:
        res = queries.lookup(conn, args.query)
    finally:
        conn.close()
    if args.json:
        _print_json(res)
        return 0 if res["households"] else 3
    rows = []
    for h in res["households"]:
        sent = sum(1 for n in h["notices"] if n["status"] in ("sent", "delivered", "acknowledged"))
        for m in h["mailboxes"]:
            rows.append({**{k: h[k] for k in ("household_id", "contact_name", "building_id", "domain", "wave_id",
                                               "cutover_at")}, **m, "notices_sent": sent})
    if args.csv:
        _write_csv(rows, LOOKUP_COLUMNS)
        return 0 if rows else 3
    if not res["households"]:
        print(f"no household matches {args.query!r}", file=sys.stderr)
        return 3
    for h in res["households"]:
        print(f"household {h['household_id']} ({h['contact_name']}), building {h['building_id']} "
              f"{h['building_name']}, domain {h['domain']}, wave {h['wave_id']}; MX switched: {h['cutover_at'] or 'no'}")
        for m in h["mailboxes"]:
            print(f"  {m['address']:<40} {m['protocol']:<5} migrated: {'yes' if m['migrated'] else 'not yet'}"
                  f" (first {m['first_copied_at'] or '-'}, last {m['last_copied_at'] or '-'}), "
                  f"{m['messages_copied'] or 0} messages, proof: {m['proof_state']}")
            for r in m["proof_reasons"][:3]:
                print(f"      {r}")
        for n in h["notices"]:
            print(f"  notice {n['campaign']}/{n['kind']} via {n['channel']}: {n['status']} {n['sent_at'] or ''}")
    return 0


def cmd_report(args) -> int:
    """Operator report of one building: one row per mailbox (pass, proof, waivers, exceptions)."""
    from mailshift.progress import queries
    from mailshift.store import progress as store

    conn = db.connect(args.db)
    try:
        if not args.no_refresh:
            store.refresh_changed(conn)
        rep = queries.building_report(conn, args.building)
    finally:
        conn.close()
    if rep is None:
        print(f"error: no building {args.building!r}", file=sys.stderr)
        return 3
    if args.csv:
        _write_csv(rep["mailboxes"], queries.REPORT_COLUMNS)
    elif args.json:
        _print_json(rep)
    else:
        b = rep["building"]
        print(f"building {b['id']} {b['name'] or ''}: wave {b['wave_id']}, state {b['state']}, mailboxes "
              f"{b['mailboxes_copied'] or 0}/{b['mailboxes'] or 0} copied, {b['mailboxes_proven'] or 0} proven; "
              f"open exceptions {rep['exceptions_open']}, active waivers {rep['waivers_active']}; "
              f"proof report: {rep['report'] or '-'}")
        for r in rep["mailboxes"]:
            print(f"  {r['address']:<40} {r['messages_copied']:>7} msgs {r['bytes_copied'] / 1e6:>9.1f} MB "
                  f"pass {r['last_pass_kind'] or '-'}/{r['last_pass_status'] or '-'} proof {r['proof_verdict'] or '-'}")
    return 0


# -- copy -------------------------------------------------------------------------------------
class _Progress:
    """A one-line progress display on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.started = time.monotonic()

    def __call__(self, s) -> None:
        if not self.enabled:
            return
        took = max(time.monotonic() - self.started, 1e-6)
        done = s.copied + s.already
        sys.stderr.write(f"\r{s.mailbox}: {done}/{s.source_messages} messages, {s.bytes / 1e6:.1f} MB, "
                         f"{s.copied / took:.0f} msg/s, refused {s.refused}   ")
        sys.stderr.flush()


def cmd_copy(args) -> int:
    from mailshift.copy.copy_one import UnknownMailbox, copy_one
    from mailshift.errors import AuthError, ConfigError
    from mailshift.protocols.endpoint import endpoint_from_env

    conn = db.connect(args.db)
    progress = _Progress(args.progress or sys.stderr.isatty())
    try:
        summary = copy_one(conn, args.mailbox, args.pass_kind, resolve=endpoint_from_env,
                           dest_conn_id=args.dest_conn, progress=progress,
                           batch_messages=args.batch_messages, append_lanes=args.append_lanes,
                           max_batches_in_flight=args.in_flight)
    except (UnknownMailbox, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthError as exc:
        print(f"error (not retried): {exc}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    if progress.enabled:
        sys.stderr.write("\n")
    _print_json(summary.as_dict())
    return 0 if summary.refused == 0 else 4


# -- plan -------------------------------------------------------------------------------------
def _kv_sizes(items: list[str] | None, opt: str, size: bool) -> dict[str, int]:
    from mailshift.planning.planner import parse_size

    out = {}
    for item in items or []:
        system, sep, value = item.partition("=")
        if not sep or not system:
            raise ValueError(f"{opt} expects SYSTEM=VALUE, got {item!r}")
        out[system] = parse_size(value) if size else int(value)
    return out


def _plan_limits(args, previous: dict | None, closed_waves):
    """Options given > the latest stored plan's limits > built-in defaults."""
    import dataclasses
    import datetime as dt

    from mailshift.planning.planner import PlanLimits, SystemLimit, parse_size

    if previous:
        base = PlanLimits.from_dict(previous)
    else:
        today = dt.date.today()
        first = today + dt.timedelta(days=14)
        base = PlanLimits(start_date=first + dt.timedelta(days=(7 - first.weekday()) % 7))
    kw = {}
    for name in ("pilot_buildings", "pilot_max_households", "max_households", "max_mailboxes",
                 "days_between", "window_days"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.max_bytes is not None:
        kw["max_bytes"] = parse_size(args.max_bytes)
    if args.start is not None:
        kw["start_date"] = dt.date.fromisoformat(args.start)
    sysm = _kv_sizes(args.system_max_mailboxes, "--system-max-mailboxes", False)
    sysb = _kv_sizes(args.system_max_bytes, "--system-max-bytes", True)
    if sysm or sysb:
        merged = dict(base.system_limits)
        for s in sorted(set(sysm) | set(sysb)):
            old = merged.get(s, SystemLimit())
            merged[s] = SystemLimit(sysm.get(s, old.max_mailboxes), sysb.get(s, old.max_bytes))
        kw["system_limits"] = merged
    return dataclasses.replace(base, closed_waves=frozenset(closed_waves), **kw)


def cmd_plan(args) -> int:
    import getpass

    from mailshift.planning import snapshot
    from mailshift.planning.planner import PlanError, parse_size, plan_waves, read_mailbox_sizes, render_table
    from mailshift.store import plans as plan_store

    try:
        if args.shards < 1:
            raise ValueError(f"--shards must be >= 1, got {args.shards}")
        sizes = read_mailbox_sizes(args.sizes) if args.sizes else None
        default_bytes = parse_size(args.default_mailbox_bytes)
        conn = db.connect(args.db)
        try:
            with plan_store.plan_transaction(conn):
                previous = plan_store.latest_limits(conn)
                inp = plan_store.read_inventory(conn, sizes=sizes, default_mailbox_bytes=default_bytes)
                limits = _plan_limits(args, previous, inp.closed_waves)
                plan = plan_waves(inp.loads, limits)
                result = None
                if not args.dry_run:
                    result = plan_store.store_plan(conn, plan, inp, commit=False,
                                                   created_by=args.created_by or getpass.getuser())
        finally:
            conn.close()
    except (PlanError, ValueError, OSError) as exc:
        print(f"plan NOT stored: {exc}", file=sys.stderr)
        return 2
    manifest = None
    if result is not None and not args.no_snapshot:
        sdir = args.snapshot_dir or snapshot.default_dir()
        manifest = snapshot.write_snapshot(
            sdir, plan_store.snapshot_buildings(inp, plan), plan_id=result.plan_id, plan_hash=plan.plan_hash,
            waves=[{"number": w.number, "name": w.name, "kind": w.kind, "start_date": w.start_date.isoformat()}
                   for w in plan.waves],
            source_systems=inp.systems, shards=args.shards)
    projection = _projection(args, plan, inp, sizes, default_bytes) if args.projection else None
    if args.json:
        out = plan.to_dict()
        if projection is not None:
            out["projection"] = projection
        out["estimated_mailboxes"] = inp.sizes_missing
        out["stored"] = None if result is None else {
            "plan_id": result.plan_id, "unchanged": result.unchanged, "waves_changed": result.waves_changed,
            "waves_deleted": result.waves_deleted, "buildings_changed": result.buildings_changed}
        out["snapshot"] = None if manifest is None else {
            "dir": str(args.snapshot_dir or snapshot.default_dir()), "shards": manifest["shards"],
            "buildings": manifest["buildings"], "mailboxes": manifest["mailboxes"]}
        _print_json(out)
        return 0
    print(render_table(plan, inp.by_id, brief=args.brief))
    print()
    if inp.sizes_missing:
        print(f"sizes: {inp.sizes_missing} mailbox(es) without a measured size use the default estimate "
              f"(min(quota, {default_bytes:,} bytes)); give measured sizes with --sizes CSV")
    if result is None:
        print("dry run: nothing stored, no snapshot written")
    else:
        print(f"stored as plan {result.plan_id}" + (" (unchanged)" if result.unchanged else
              f": {result.waves_changed} wave(s) written, {result.waves_deleted} deleted, "
              f"{result.buildings_changed} building(s) changed"))
    if manifest is not None:
        print(f"snapshot: {args.snapshot_dir or snapshot.default_dir()} ({manifest['shards']} shards, "
              f"{manifest['buildings']} buildings, {manifest['mailboxes']} mailboxes)")
    if projection is not None:
        print()
        print(projection["text"])
    return 0


def _projection(args, plan, inp, sizes, default_bytes) -> dict:
    """`mailshift plan --projection`: wave durations, total, workers for --target-date."""
    import datetime as dt
    import json as _json

    from mailshift.planning import projection as pr

    rates = pr.Rates()
    if args.rates:
        doc = _json.loads(open(args.rates, encoding="utf-8").read())
        doc = doc.get("calibrated") or doc.get("rates") or doc
        rates = pr.Rates(**{k: v for k, v in doc.items() if k in pr.Rates.__dataclass_fields__})
    pools = {s: n or 1 for s, n in inp.systems.items()}
    pools.update(_kv_sizes(args.pool_slots, "--pool-slots", False))
    cluster = pr.Cluster(args.workers, args.worker_concurrency, pools, args.parallel_buildings)
    conn = db.connect(args.db)
    try:
        with conn:
            work, systems, size_sources = pr.read_mailbox_work(conn, sizes, default_bytes)
    finally:
        conn.close()
    waves = pr.wave_work_from_plan(plan, work, systems)
    p = pr.project(waves, rates, cluster, days_between=plan.limits.days_between)
    target = calendar = None
    if args.target_date:
        target = pr.workers_for_target(waves, rates, cluster, dt.date.fromisoformat(args.target_date),
                                       plan.limits.start_date)
        calendar = pr.workers_for_calendar(waves, rates, cluster, plan.limits.days_between)
    return {**p.to_dict(), "size_sources": size_sources, "target": target, "calendar": calendar,
            "text": pr.render(p, target, size_sources, calendar)}


# -- verify / waive ---------------------------------------------------------------------------
def cmd_verify(args) -> int:
    from mailshift.copy.copy_one import UnknownMailbox
    from mailshift.errors import AuthError, ConfigError
    from mailshift.protocols.endpoint import endpoint_from_env
    from mailshift.verify import verify_building, verify_mailbox

    if (args.mailbox is None) == (args.building is None):
        print("error: name exactly one of MAILBOX (address or id) or --building ID", file=sys.stderr)
        return 2
    if not 0 < args.sample_rate <= 1:
        print(f"error: --sample-rate {args.sample_rate} must be in (0, 1]", file=sys.stderr)
        return 2
    conn = db.connect(args.db)
    try:
        if args.building is not None:
            bv = verify_building(conn, args.building, endpoint_from_env, args.mode, reports=args.reports_dir,
                                 dest_conn_id=args.dest_conn, kind=args.kind, dsn=args.db,
                                 sample_rate=args.sample_rate)
            out = {"building": bv.building_id, "verify_run_id": bv.verify_run_id, "proven": bv.proven,
                   "gx_success": bv.gx_success, "report": bv.report_path, "errors": bv.errors,
                   "seconds": round(bv.seconds, 2),
                   "mailboxes": [{"address": m.address, "state": m.state, "reasons": m.reasons[:20]}
                                 for m in bv.mailboxes]}
            ok = bv.proven
        else:
            v = verify_mailbox(conn, args.mailbox, endpoint_from_env, args.mode, dest_conn_id=args.dest_conn,
                               kind=args.kind, sample_rate=args.sample_rate)
            out = {k: val for k, val in v.as_dict().items() if k != "findings"}
            out["findings"] = [f.label() for f in v.findings]
            ok = v.state in ("proven", "waived")
    except (UnknownMailbox, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthError as exc:
        print(f"error (not retried): {exc}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    _print_json(out)
    return 0 if ok else 5


def cmd_waive(args) -> int:
    from mailshift.copy.copy_one import UnknownMailbox, mailbox_context
    from mailshift.errors import WaiverError
    from mailshift.store.waivers import create_waiver, list_waivers, revoke_waiver

    conn = db.connect(args.db)
    try:
        if args.list:
            if args.mailbox is None:
                print("error: --list needs MAILBOX", file=sys.stderr)
                return 2
            mid = mailbox_context(conn, args.mailbox).mailbox.id
            _print_json([dict(w.__dict__, active=w.active, text=w.describe()) for w in list_waivers(conn, [mid])])
            return 0
        if not args.by:
            print("error: --by NAME is required: a waiver is always a named person's decision", file=sys.stderr)
            return 2
        if args.revoke is not None:
            if args.mailbox is not None or args.reason:
                print("error: --revoke ID takes only --by", file=sys.stderr)
                return 2
            w = revoke_waiver(conn, args.revoke, args.by)
            print(f"revoked {w.describe()}")
            return 0
        if args.mailbox is None:
            print("error: name the MAILBOX (address or id) the waiver is for", file=sys.stderr)
            return 2
        w = create_waiver(conn, args.mailbox, args.by, args.reason or "", finding_id=args.finding,
                          folder=args.folder, src_uid=args.uid, dest_folder=args.dest_folder,
                          dest_uid=args.dest_uid, whole_mailbox=args.whole_mailbox,
                          requested_by=args.requested_by)
    except (WaiverError, UnknownMailbox) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(f"recorded {w.describe()}")
    print("run `mailshift verify` again to refresh the proof row and the building report")
    return 0


# -- audit and notices -------------------------------------------------------------------------
from contextlib import closing as _closing  # noqa: E402


def _smtp_target(arg):
    import os

    v = arg or os.environ.get("MAILSHIFT_SMTP")
    if not v:
        from lab.config import LabConfig, LabNotConfigured

        try:
            cfg = LabConfig.load()
            v = f"{cfg.smtp_host}:{cfg.smtp_port}"
        except LabNotConfigured:
            raise db.ConfigError("no SMTP relay: pass --smtp HOST:PORT or set MAILSHIFT_SMTP") from None
    host, _, port = v.rpartition(":")
    return host, int(port)


def cmd_audit_addresses(args) -> int:
    from mailshift.store import audit as store

    with _closing(db.connect(args.db)) as conn:
        stats = store.run_address_audit(conn, building=args.building, domain=args.domain,
                                        alias_days=args.alias_days)
        stats["renames_list"] = store.renames(conn, args.building, args.domain) if args.list else None
    _print_json(stats)
    return 0


def cmd_audit_pop3_logs(args) -> int:
    from mailshift.customers import pop3logs
    from mailshift.store import audit as store

    t0 = time.monotonic()
    result = pop3logs.parse_files(args.files, year=args.year)
    el = time.monotonic() - t0
    print(f"parsed {result.lines} lines in {el:.1f}s ({result.lines / max(el, 1e-9):,.0f} lines/s),"
          f" {result.malformed} malformed", file=sys.stderr)
    if args.dry_run:
        _print_json({"lines": result.lines, "malformed": result.malformed,
                     "malformed_samples": result.malformed_samples,
                     "usage": {k: u.as_dict() for k, u in sorted(result.usage.items())}})
        return 0
    with _closing(db.connect(args.db)) as conn:
        stats = store.store_pop3_usage(conn, result, source_system=args.source_system,
                                       inputs=args.files)
    _print_json(stats)
    return 0


def cmd_audit_rules(args) -> int:
    from mailshift.store import audit as store

    with _closing(db.connect(args.db)) as conn:
        stats = store.store_rules(conn, args.export_dir, args.dest)
    _print_json(stats)
    return 0


def _csv_to(target: str, write, rows: list, what: str) -> None:
    """CSV to stdout ("-") or to a file, saying on stderr how many rows went where."""
    if target == "-":
        write(rows, sys.stdout)
        return
    with open(target, "w", newline="", encoding="utf-8") as f:
        write(rows, f)
    print(f"wrote {len(rows)} {what} to {target}", file=sys.stderr)


def cmd_audit_report(args) -> int:
    from mailshift.customers import reports

    if (args.building is None) == (args.wave is None):
        print("error: give a BUILDING or --wave N", file=sys.stderr)
        return 2
    with _closing(db.connect(args.db)) as conn:
        rows = reports.finding_counts(conn, building=args.building, wave=args.wave)
    if args.csv:
        _csv_to(args.csv, reports.write_csv, rows, "rows")
    else:
        _print_json(rows)
    return 0


def cmd_notices_send(args) -> int:
    from mailshift.customers import notices

    if (args.building is None) == (args.domain is None):
        print("error: give --building or --domain", file=sys.stderr)
        return 2
    host, port = _smtp_target(args.smtp)
    with _closing(db.connect(args.db)) as conn:
        res = notices.send_round(conn, args.round, building=args.building, domain=args.domain,
                                 smtp_host=host, smtp_port=port, sender=args.sender,
                                 campaign=args.campaign, cutover=args.cutover_date)
    _print_json({"sent": len(res.sent), "already_sent": res.skipped_done,
                 "not_required": res.not_required, "failed": res.failed})
    return 0 if not res.failed else 6


def cmd_notices_export(args) -> int:
    from mailshift.customers import notices

    if (args.building is None) == (args.domain is None):
        print("error: give --building or --domain", file=sys.stderr)
        return 2
    with _closing(db.connect(args.db)) as conn:
        rows = notices.export_list(conn, args.channel, building=args.building,
                                   domain=args.domain, campaign=args.campaign)
    _csv_to(args.csv or "-", notices.write_csv, rows, "households")
    return 0


def cmd_notices_record(args) -> int:
    import getpass

    from mailshift.customers import notices

    with open(args.csv_file, encoding="utf-8-sig") as f:
        text = f.read()
    with _closing(db.connect(args.db)) as conn:
        try:
            res = notices.record_outcomes(conn, text, recorded_by=args.by or getpass.getuser(),
                                          source=args.csv_file, campaign=args.campaign)
        except notices.RecordError as exc:
            for p in exc.problems:
                print(f"error: {p}", file=sys.stderr)
            print("nothing recorded", file=sys.stderr)
            return 2
    _print_json(res)
    return 0


def cmd_notices_gate(args) -> int:
    from mailshift.customers import notices

    with _closing(db.connect(args.db)) as conn:
        reasons = notices.notice_gate_check(conn, args.domain, campaign=args.campaign)
    _print_json({"domain": args.domain, "ok": not reasons, "reasons": reasons})
    return 0 if not reasons else 5


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailshift", description="Zero-loss mailbox migration for ISPs.")
    p.add_argument("--db", help="mailshift database URL (default: $MAILSHIFT_DB_URL)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="apply pending migrations").set_defaults(func=cmd_db_upgrade)
    dbp.add_parser("status", help="applied and pending migrations").set_defaults(func=cmd_db_status)

    inv = sub.add_parser("inventory", help="inventory of buildings, households, mailboxes")
    invs = inv.add_subparsers(dest="inventory_command", required=True)
    load = invs.add_parser("load", help="validate and load legacy exports (all or nothing)")
    load.add_argument("export_dir")
    load.set_defaults(func=cmd_inventory_load)

    st = sub.add_parser("status", help="inventory and ledger counts")
    st.add_argument("--json", action="store_true")
    st.add_argument("--progress", action="store_true",
                    help="the operator UI's overview: waves, copied vs total, throughput, ETA (refreshes summaries)")
    st.add_argument("--csv", action="store_true", help="with --progress: one CSV row per wave")
    st.add_argument("--no-refresh", action="store_true", help="with --progress: do not refresh the summaries")
    st.set_defaults(func=lambda a: cmd_status_progress(a) if a.progress else cmd_status(a))

    lk = sub.add_parser("lookup", help="support desk: a household by mailbox address (or prefix) or household ID")
    lk.add_argument("query", metavar="ADDRESS")
    g = lk.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    lk.set_defaults(func=cmd_lookup)

    rp = sub.add_parser("report", help="operator report of a building: mailboxes, passes, proof (CSV or JSON)")
    rp.add_argument("building", metavar="BUILDING")
    g = rp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    rp.add_argument("--no-refresh", action="store_true", help="do not refresh the progress summaries first")
    rp.set_defaults(func=cmd_report)

    cp = sub.add_parser("copy", help="one copy pass of one mailbox")
    cp.add_argument("mailbox", help="address or mailbox id")
    cp.add_argument("--pass", dest="pass_kind", default="prestage", choices=("prestage", "delta", "final", "drain"))
    cp.add_argument("--dest-conn", default="mailshift_dest",
                    help="connection id of the destination (env AIRFLOW_CONN_<ID>)")
    cp.add_argument("--batch-messages", type=int, default=250)
    cp.add_argument("--append-lanes", type=int, default=None,
                    help="destination connections appending in parallel, order kept per folder "
                         "(default: the building spec's dest_append_lanes, 3)")
    cp.add_argument("--in-flight", type=int, default=None,
                    help="batches appended or queued at once, bounds memory (default 6)")
    cp.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    cp.set_defaults(func=cmd_copy)

    vf = sub.add_parser("verify", help="independent zero-loss verification of a mailbox or a building")
    vf.add_argument("mailbox", nargs="?", help="address or mailbox id (or use --building)")
    vf.add_argument("--building", help="verify every mailbox of this building, run the GX suite, write the report")
    vf.add_argument("--mode", default="full", choices=("full", "sample"),
                    help="full: SHA-256 of every message; sample: header digest + size for all, full digest "
                         "for a random sample")
    vf.add_argument("--sample-rate", type=float, default=0.02, help="fraction fully digested in sample mode")
    vf.add_argument("--kind", default="pre_cutover", choices=("pre_cutover", "final"))
    vf.add_argument("--reports-dir", help="where HTML reports go (default $MAILSHIFT_REPORTS_DIR or .lab/reports)")
    vf.add_argument("--dest-conn", default="mailshift_dest",
                    help="connection id of the destination (env AIRFLOW_CONN_<ID>)")
    vf.set_defaults(func=cmd_verify)

    wv = sub.add_parser("waive", help="record (or revoke) a named person's waiver for a finding")
    wv.add_argument("mailbox", nargs="?", help="address or mailbox id")
    wv.add_argument("--by", help="the person approving (or revoking) the waiver")
    wv.add_argument("--reason", help="why the finding may stand")
    wv.add_argument("--requested-by", help="who asked for it (must differ from --by)")
    wv.add_argument("--finding", type=int, help="waive the message/folder a finding (#id) names")
    wv.add_argument("--folder", help="source folder name (the whole folder, or with --uid one message)")
    wv.add_argument("--uid", type=int, help="source UID in --folder")
    wv.add_argument("--dest-folder", help="destination folder of an extra message (with --dest-uid)")
    wv.add_argument("--dest-uid", type=int, help="destination UID of an extra message")
    wv.add_argument("--whole-mailbox", action="store_true", help="waive every finding of the mailbox")
    wv.add_argument("--revoke", type=int, metavar="WAIVER_ID", help="revoke a waiver (kept for the audit)")
    wv.add_argument("--list", action="store_true", help="list the mailbox's waivers")
    wv.set_defaults(func=cmd_waive)

    pl = sub.add_parser("plan", help="plan the waves, store them, write the DAG snapshot",
                        description="Partition buildings into waves (pilot first, whole buildings, limits per "
                                    "wave and per source system, blackout dates, operator pins). Options not "
                                    "given keep the latest stored plan's value.")
    pl.add_argument("--pilot-buildings", type=int, help="buildings in the pilot wave (0: no pilot; default 5)")
    pl.add_argument("--pilot-max-households", type=int, help="household limit of the pilot wave")
    pl.add_argument("--max-households", type=int, help="households per wave (default 10000)")
    pl.add_argument("--max-mailboxes", type=int, help="mailboxes per wave (default 12500)")
    pl.add_argument("--max-bytes", help="estimated bytes per wave, e.g. 20T (default: no limit)")
    pl.add_argument("--system-max-mailboxes", action="append", metavar="SYSTEM=N",
                    help="mailboxes per wave of one source system (repeatable)")
    pl.add_argument("--system-max-bytes", action="append", metavar="SYSTEM=SIZE",
                    help="bytes per wave of one source system, e.g. src-a=5T (repeatable)")
    pl.add_argument("--start", metavar="YYYY-MM-DD",
                    help="first wave's date (default: the first Monday at least 14 days ahead)")
    pl.add_argument("--days-between", type=int, help="days from one wave to the next (default 7)")
    pl.add_argument("--window-days", type=int, help="days of each wave's cutover window (default 1)")
    pl.add_argument("--sizes", metavar="CSV", help="measured mailbox sizes: address,bytes[,messages]")
    pl.add_argument("--default-mailbox-bytes", default="200MiB",
                    help="estimate for a mailbox without a measured size, capped by its quota (default 200MiB)")
    pl.add_argument("--snapshot-dir", help="default $MAILSHIFT_SNAPSHOT_DIR or <repo>/include/snapshot")
    pl.add_argument("--shards", type=int, default=16, help="snapshot shards (default 16)")
    pl.add_argument("--no-snapshot", action="store_true", help="store the plan, write no snapshot")
    pl.add_argument("--dry-run", action="store_true", help="print the plan; store nothing, write nothing")
    pl.add_argument("--created-by", help="recorded in wave_plan.created_by (default: the OS user)")
    pl.add_argument("--brief", action="store_true", help="wave totals only, no building rows")
    pl.add_argument("--json", action="store_true")
    pj = pl.add_argument_group("projection", "--projection: each wave's and the whole migration's duration "
                                             "on a cluster, from measured rates (bench/README.md)")
    pj.add_argument("--projection", action="store_true", help="add the duration projection")
    pj.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    pj.add_argument("--worker-concurrency", type=int, default=8, help="task slots per worker (default 8)")
    pj.add_argument("--pool-slots", action="append", metavar="SYSTEM=N",
                    help="copy connections of a source system (default: its max_connections)")
    pj.add_argument("--parallel-buildings", type=int, default=4, help="building runs per wave (default 4)")
    pj.add_argument("--rates", metavar="JSON", help="measured rates: .lab/bench/projection-rates.json of "
                    "bench/projection_bench.py (default: the lab's calibrated figures)")
    pj.add_argument("--target-date", metavar="YYYY-MM-DD", help="also: workers needed to finish by then")
    pl.set_defaults(func=cmd_plan)

    au = sub.add_parser("audit", help="pre-migration audit: addresses, POP3 logs, rules, reports")
    aus = au.add_subparsers(dest="audit_command", required=True)
    a = aus.add_parser("addresses", help="audit every inventory address (dot-atom, quoted, length, "
                                         "case-folded duplicates); store findings and renames")
    a.add_argument("--building")
    a.add_argument("--domain")
    a.add_argument("--alias-days", type=int, default=180, help="old address keeps delivering this long")
    a.add_argument("--list", action="store_true", help="print the rename records too")
    a.set_defaults(func=cmd_audit_addresses)
    a = aus.add_parser("pop3-logs", help="parse legacy POP3 logs (Dovecot, Courier; .gz/.xz ok)")
    a.add_argument("files", nargs="+")
    a.add_argument("--source-system", help="logins belong to this source system")
    a.add_argument("--year", type=int, help="year for syslog timestamps without one (default: this year)")
    a.add_argument("--dry-run", action="store_true", help="print the usage, store nothing")
    a.set_defaults(func=cmd_audit_pop3_logs)
    a = aus.add_parser("rules", help="inventory forward/auto-reply rules from an export dir")
    a.add_argument("export_dir", help="<dir>/<address or login>/{*.sieve,.forward,.qmail*}")
    a.add_argument("--dest", help="the destination's rules, same layout: compare")
    a.set_defaults(func=cmd_audit_rules)
    a = aus.add_parser("report", help="finding counts per building or wave")
    a.add_argument("building", nargs="?")
    a.add_argument("--wave", type=int)
    a.add_argument("--csv", nargs="?", const="-", help="write CSV (to FILE, or stdout)")
    a.set_defaults(func=cmd_audit_report)

    no = sub.add_parser("notices", help="customer-notice campaigns: email rounds, letter/call lists, outcomes")
    nos = no.add_subparsers(dest="notices_command", required=True)
    a = nos.add_parser("send", help="send one email round to every mailbox in scope (idempotent)")
    a.add_argument("round", type=int)
    a.add_argument("--building")
    a.add_argument("--domain")
    a.add_argument("--smtp", help="HOST:PORT of the relay (default $MAILSHIFT_SMTP, else the lab MTA)")
    a.add_argument("--sender", help="From address (default notices@<domain>)")
    a.add_argument("--cutover-date", help="named in the mail")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=cmd_notices_send)
    a = nos.add_parser("export", help="letter or call list of the affected households, as CSV")
    a.add_argument("channel", choices=("letters", "calls", "letter", "call"))
    a.add_argument("--building")
    a.add_argument("--domain")
    a.add_argument("--csv", nargs="?", const="-", help="write to FILE (default stdout)")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=lambda args: cmd_notices_export(
        argparse.Namespace(**{**vars(args), "channel": args.channel.rstrip("s")})))
    a = nos.add_parser("record", help="record outcomes from a CSV (household_id,channel,outcome,...)")
    a.add_argument("csv_file")
    a.add_argument("--by", help="who records (default: the OS user)")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=cmd_notices_record)
    a = nos.add_parser("gate", help="the cutover gate's notice condition for a domain (exit 5: refused)")
    a.add_argument("domain")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=cmd_notices_gate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except db.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
