"""`mailshift plan [--projection]`: partition buildings into waves, store the plan, write the DAG
snapshot, and (--projection) say how long the waves take on a given cluster."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from contextlib import closing
from typing import Any, NamedTuple

from mailshift.cli import errors
from mailshift.cli.output import print_json
from mailshift.planning.snapshot import DEFAULT_SHARDS
from mailshift.store import db


class _Planned(NamedTuple):
    plan: Any           # mailshift.planning.planner.Plan
    inp: Any            # mailshift.store.plans.PlanInput
    sizes: dict | None
    default_bytes: int
    result: Any         # mailshift.store.plans.StoreResult, None on --dry-run


def _kv_sizes(items: list[str] | None, opt: str, size: bool) -> dict[str, int]:
    """SYSTEM=VALUE options (repeatable) as a dict; sizes may carry a unit (5T, 200MiB)."""
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
    from mailshift.planning.planner import PlanLimits, SystemLimit, parse_size

    if previous:
        base = PlanLimits.from_dict(previous)
    else:
        first = dt.date.today() + dt.timedelta(days=14)
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


def _plan_and_store(args) -> _Planned:
    """Read the inventory, plan, and (unless --dry-run) store, all in one transaction."""
    import getpass

    from mailshift.planning.planner import parse_size, plan_waves, read_mailbox_sizes
    from mailshift.store import plans as plan_store

    if args.shards < 1:
        raise ValueError(f"--shards must be >= 1, got {args.shards}")
    sizes = read_mailbox_sizes(args.sizes) if args.sizes else None
    default_bytes = parse_size(args.default_mailbox_bytes)
    with closing(db.connect(args.db)) as conn, plan_store.plan_transaction(conn):
        previous = plan_store.latest_limits(conn)
        inp = plan_store.read_inventory(conn, sizes=sizes, default_mailbox_bytes=default_bytes)
        plan = plan_waves(inp.loads, _plan_limits(args, previous, inp.closed_waves))
        result = None
        if not args.dry_run:
            result = plan_store.store_plan(conn, plan, inp, commit=False,
                                           created_by=args.created_by or getpass.getuser())
    return _Planned(plan, inp, sizes, default_bytes, result)


def _write_snapshot(args, run: _Planned) -> dict | None:
    """The DAG snapshot of a stored plan (the manifest), None on --dry-run or --no-snapshot."""
    from mailshift.planning import snapshot
    from mailshift.store import plans as plan_store

    if run.result is None or args.no_snapshot:
        return None
    plan = run.plan
    return snapshot.write_snapshot(
        args.snapshot_dir or snapshot.default_dir(), plan_store.snapshot_buildings(run.inp, plan),
        plan_id=run.result.plan_id, plan_hash=plan.plan_hash,
        waves=[{"number": w.number, "name": w.name, "kind": w.kind, "start_date": w.start_date.isoformat()}
               for w in plan.waves],
        source_systems=run.inp.systems, shards=args.shards)


def _projection(args, run: _Planned) -> dict:
    """`mailshift plan --projection`: wave durations, total, workers for --target-date."""
    from mailshift.planning import projection as pr

    rates = pr.Rates()
    if args.rates:
        with open(args.rates, encoding="utf-8") as f:
            doc = json.load(f)
        doc = doc.get("calibrated") or doc.get("rates") or doc
        rates = pr.Rates(**{k: v for k, v in doc.items() if k in pr.Rates.__dataclass_fields__})
    pools = {s: n or 1 for s, n in run.inp.systems.items()}
    pools.update(_kv_sizes(args.pool_slots, "--pool-slots", False))
    cluster = pr.Cluster(args.workers, args.worker_concurrency, pools, args.parallel_buildings)
    with closing(db.connect(args.db)) as conn, conn:
        work, systems, size_sources = pr.read_mailbox_work(conn, run.sizes, run.default_bytes)
    plan = run.plan
    waves = pr.wave_work_from_plan(plan, work, systems)
    p = pr.project(waves, rates, cluster, days_between=plan.limits.days_between)
    target = calendar = None
    if args.target_date:
        target = pr.workers_for_target(waves, rates, cluster, dt.date.fromisoformat(args.target_date),
                                       plan.limits.start_date)
        calendar = pr.workers_for_calendar(waves, rates, cluster, plan.limits.days_between)
    nights = _cutover_nights(args, run, work, systems, rates, cluster)
    return {**p.to_dict(), "size_sources": size_sources, "target": target, "calendar": calendar,
            "cutover": nights, "text": pr.render(p, target, size_sources, calendar) + _nights_text(nights)}


def _cutover_nights(args, run: _Planned, work: dict, systems: dict, rates, cluster) -> dict:
    """The cutover night of every domain (one MX swap each): its mailboxes by source system."""
    from mailshift.planning import projection as pr

    domain_of = {b.id: b.domain for b in run.inp.loads}
    by_domain: dict[str, dict[str, list]] = {}
    for building, mailboxes in work.items():
        if building in domain_of:
            by_domain.setdefault(domain_of[building], {}).setdefault(systems[building], []).extend(mailboxes)
    return {d: pr.project_cutover(mb, rates, cluster, window_hours=args.cutover_window)
            for d, mb in sorted(by_domain.items())}


def _nights_text(nights: dict) -> str:
    lines = []
    for domain, n in nights.items():
        t = n["night"]
        need = n["workers_for_window"]
        lines.append(f"\ncutover night of {domain} ({n['mailboxes']:,} mailboxes): approval -> swap "
                     f"{t['approval_to_swap_s'] / 3600:.1f} h (final pass {t['final_pass_s'] / 3600:.1f} h + re-verify "
                     f"{t['reverify_s'] / 3600:.1f} h), swap -> drain quiet {t['swap_to_drain_quiet_s'] / 60:.0f} min, "
                     f"swap -> final proof {t['swap_to_final_proof_s'] / 3600:.1f} h; workers for a "
                     f"{n['window_hours']:g} h window: {need if need else 'none fits (' + n['note'] + ')'}")
    return "".join(lines)


def _print_json(args, run: _Planned, manifest: dict | None, projection: dict | None) -> None:
    from mailshift.planning import snapshot

    out = run.plan.to_dict()
    if projection is not None:
        out["projection"] = projection
    out["estimated_mailboxes"] = run.inp.sizes_missing
    r = run.result
    out["stored"] = None if r is None else {
        "plan_id": r.plan_id, "unchanged": r.unchanged, "waves_changed": r.waves_changed,
        "waves_deleted": r.waves_deleted, "buildings_changed": r.buildings_changed}
    out["snapshot"] = None if manifest is None else {
        "dir": str(args.snapshot_dir or snapshot.default_dir()), "shards": manifest["shards"],
        "buildings": manifest["buildings"], "mailboxes": manifest["mailboxes"]}
    print_json(out)


def _print_text(args, run: _Planned, manifest: dict | None, projection: dict | None) -> None:
    from mailshift.planning import snapshot
    from mailshift.planning.planner import render_table

    print(render_table(run.plan, run.inp.by_id, brief=args.brief))
    print()
    if run.inp.sizes_missing:
        print(f"sizes: {run.inp.sizes_missing} mailbox(es) without a measured size use the default estimate "
              f"(min(quota, {run.default_bytes:,} bytes)); give measured sizes with --sizes CSV")
    r = run.result
    if r is None:
        print("dry run: nothing stored, no snapshot written")
    else:
        print(f"stored as plan {r.plan_id}" + (" (unchanged)" if r.unchanged else
              f": {r.waves_changed} wave(s) written, {r.waves_deleted} deleted, "
              f"{r.buildings_changed} building(s) changed"))
    if manifest is not None:
        print(f"snapshot: {args.snapshot_dir or snapshot.default_dir()} ({manifest['shards']} shards, "
              f"{manifest['buildings']} buildings, {manifest['mailboxes']} mailboxes)")
    if projection is not None:
        print()
        print(projection["text"])


def cmd_plan(args) -> int:
    """Plan, store, snapshot, project; bad options or unplannable inputs exit 2, nothing stored."""
    try:
        run = _plan_and_store(args)
    except (ValueError, OSError) as exc:     # PlanError is a ValueError
        return errors.usage(f"plan NOT stored: {errors.one_line(exc)}")
    manifest = _write_snapshot(args, run)
    try:
        projection = _projection(args, run) if args.projection else None
    except (ValueError, OSError) as exc:
        return errors.usage(f"projection: {errors.one_line(exc)}")
    (_print_json if args.json else _print_text)(args, run, manifest, projection)
    return errors.OK


def _register_limits(pl) -> None:
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


def _register_projection(pl) -> None:
    pj = pl.add_argument_group("projection", "--projection: each wave's and the whole migration's duration "
                                             "on a cluster, from measured rates (bench/README.md)")
    pj.add_argument("--projection", action="store_true", help="add the duration projection")
    pj.add_argument("--cutover-window", type=float, default=6.0, metavar="HOURS",
                    help="the night's window for approval -> swap (default 6): the projection says how many "
                         "workers fit it")
    pj.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    pj.add_argument("--worker-concurrency", type=int, default=8, help="task slots per worker (default 8)")
    pj.add_argument("--pool-slots", action="append", metavar="SYSTEM=N",
                    help="copy connections of a source system (default: its max_connections)")
    pj.add_argument("--parallel-buildings", type=int, default=4, help="building runs per wave (default 4)")
    pj.add_argument("--rates", metavar="JSON", help="measured rates: .lab/bench/projection-rates.json of "
                    "bench/projection_bench.py (default: the lab's calibrated figures)")
    pj.add_argument("--target-date", metavar="YYYY-MM-DD", help="also: workers needed to finish by then")


def register(sub) -> None:
    pl = sub.add_parser("plan", help="plan the waves, store them, write the DAG snapshot",
                        description="Partition buildings into waves (pilot first, whole buildings, limits per "
                                    "wave and per source system, blackout dates, operator pins). Options not "
                                    "given keep the latest stored plan's value.")
    _register_limits(pl)
    pl.add_argument("--snapshot-dir", help="default $MAILSHIFT_SNAPSHOT_DIR or <repo>/include/snapshot")
    pl.add_argument("--shards", type=int, default=DEFAULT_SHARDS,
                    help=f"snapshot shards (default {DEFAULT_SHARDS}, one per dags/mailshift_buildings_shard_NN.py)")
    pl.add_argument("--no-snapshot", action="store_true", help="store the plan, write no snapshot")
    pl.add_argument("--dry-run", action="store_true", help="print the plan; store nothing, write nothing")
    pl.add_argument("--created-by", help="recorded in wave_plan.created_by (default: the OS user)")
    pl.add_argument("--brief", action="store_true", help="wave totals only, no building rows")
    pl.add_argument("--json", action="store_true")
    _register_projection(pl)
    pl.set_defaults(func=cmd_plan)
