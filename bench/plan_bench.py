#!/usr/bin/env python3
"""Wave planner benchmark: a synthetic ISP-scale inventory (default 5,000 buildings, 400,000
households, ~500,000 mailboxes, 4 source systems, 20 domains, blackout dates and pins).
Prints one JSON object.

    PYTHONPATH=include .venv/bin/python bench/plan_bench.py [--runs 5] [--shards 16]
    PYTHONPATH=include .venv/bin/python bench/plan_bench.py --db      # + the PostgreSQL path

Measured (median of --runs):
  plan_s              plan_waves() on the BuildingLoads (pure logic)
  snapshot_write_s    write_snapshot() of all buildings + mailboxes into --shards files
  shard_load_ms       load_shard() of one shard (manifest + one file, decoded to tuples):
                      median and max over all shards
  manifest_read_ms    read_manifest()
  with --db: a fresh database `plan_bench_<pid>` in the cluster of $MAILSHIFT_DB_URL is migrated
  and filled with the same inventory (COPY), then read_inventory_s (5 queries incl. 500k mailbox
  rows), store_first_s (every building changes), store_unchanged_s (same plan again) and
  cli_total_s (lock + read + plan + store unchanged) are measured; the database is dropped.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include"))
from mailshift.inventory import snapshot  # noqa: E402
from mailshift.planning.planner import (  # noqa: E402
    BuildingLoad,
    PlanLimits,
    derive_system_limits,
    estimate_mailbox,
    plan_waves,
)

SYSTEMS = {"src-a": 40, "src-b": 20, "src-c": 20, "src-d": 10}     # id -> max_connections
START = dt.date(2026, 1, 5)


def synthetic(n_buildings: int, n_households: int, seed: int = 1):
    """(BuildingLoads, SnapshotBuildings, rows for the DB) -- deterministic."""
    rng = random.Random(seed)
    weights = [rng.lognormvariate(0, 0.8) for _ in range(n_buildings)]
    scale = n_households / sum(weights)
    hh = [max(1, int(w * scale)) for w in weights]
    hh[-1] += n_households - sum(hh)
    sys_ids = list(SYSTEMS)
    sys_w = [0.4, 0.25, 0.25, 0.1]
    loads, snaps, mailboxes = [], [], []
    mid = 0
    for i in range(n_buildings):
        bid = f"B{100000 + i}"
        system = rng.choices(sys_ids, sys_w)[0]
        domain = f"d{rng.randrange(20):02d}.example.jp"
        mbs = []
        nbytes = nmsg = 0
        for h in range(hh[i]):
            for _ in range(rng.choices([1, 2, 3], [8, 1.5, 0.5])[0]):
                mid += 1
                quota = rng.choice([None, 500, 1000, 2000, 5000])
                quota = None if quota is None else quota << 20
                mbs.append(snapshot.SnapshotMailbox(mid, f"u{mid}@{domain}", "pop3" if mid % 6 == 0 else "imap"))
                mailboxes.append((mid, f"{bid}-{h}", f"u{mid}@{domain}", f"l{mid}", "pop3" if mid % 6 == 0 else "imap",
                                  quota))
                s = estimate_mailbox(quota)
                nbytes += s.bytes
                nmsg += s.messages
        blackout = frozenset()
        if rng.random() < 0.02:
            blackout = frozenset({START + dt.timedelta(days=7 * rng.randrange(1, 30))})
        pinned = rng.randrange(2, 30) if rng.random() < 0.002 else None
        loads.append(BuildingLoad(bid, domain, system, hh[i], len(mbs), nbytes, nmsg, blackout, pinned,
                                  None, f"Building {i}"))
        snaps.append(snapshot.SnapshotBuilding(bid, f"Building {i}", domain, system, snapshot.pool_name(system),
                                               None, None, tuple(mbs)))
    return loads, snaps, mailboxes


def limits() -> PlanLimits:
    return PlanLimits(start_date=START, days_between=7, pilot_buildings=8, pilot_max_households=500,
                      max_households=10_000, max_mailboxes=12_500,
                      system_limits=derive_system_limits(SYSTEMS, mailboxes_per_connection=150))


def fill_ratio(plan, lim):
    """Use of the binding limit (max over the limits of total/limit) of the regular waves but the last."""
    ratios = []
    for w in plan.waves[1:-1]:
        if w.kind != "regular" or any(w.reasons[b].code in ("oversize", "pinned") for b in w.buildings):
            continue
        r = [w.totals.households / lim.max_households, w.totals.mailboxes / lim.max_mailboxes]
        for s, sl in lim.system_limits.items():
            t = w.totals_by_system.get(s)
            if t and sl.max_mailboxes:
                r.append(t.mailboxes / sl.max_mailboxes)
        ratios.append(max(r))
    return {"waves": len(ratios), "binding_limit_use_median": round(statistics.median(ratios), 4),
            "binding_limit_use_min": round(min(ratios), 4)} if ratios else {}


def timed(fn, runs):
    out, times = None, []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times), times


FRESH = r"""
import json, sys, time
t0 = time.perf_counter()
from mailshift.planning import snapshot
t1 = time.perf_counter()
bs = snapshot.load_shard(sys.argv[1], int(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "buildings": len(bs),
                  "mailboxes": sum(b.mailbox_count for b in bs)}))
"""


def fresh_process_loads(d, shards, runs):
    """load_shard in a new interpreter, as a DAG-parsing process does (no big heap around)."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include"))
    loads, imports = [], []
    for k in range(shards):
        per = []
        for _ in range(runs):
            r = json.loads(subprocess.run([sys.executable, "-c", FRESH, d, str(k)], env=env, check=True,
                                          capture_output=True, text=True).stdout)
            per.append(r)
        loads.append(statistics.median(x["load_ms"] for x in per))
        imports.append(statistics.median(x["import_ms"] for x in per))
    return {"load_shard_ms_median": round(statistics.median(loads), 2), "load_shard_ms_max": round(max(loads), 2),
            "import_ms_median": round(statistics.median(imports), 2)}


def bench_db(loads, snaps, mailboxes, plan_limits, runs):
    import psycopg2
    import psycopg2.extensions

    from mailshift.store import db, migrate
    from mailshift.store import plans as plan_store

    base = db.resolve_dsn(None)
    name = f"plan_bench_{os.getpid()}"
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    dsn = psycopg2.extensions.make_dsn(base, dbname=name)
    res = {}
    try:
        migrate.upgrade(dsn)
        conn = psycopg2.connect(dsn)
        t = time.perf_counter()
        with conn, conn.cursor() as cur:
            def copy(table, cols, rows):
                buf = io.StringIO()
                for r in rows:
                    buf.write("\t".join("\\N" if v is None else str(v) for v in r) + "\n")
                buf.seek(0)
                cur.copy_expert(f"COPY {table} ({', '.join(cols)}) FROM STDIN", buf)
            copy("source_system", ["id", "kind", "max_connections"], [(s, "bench", n) for s, n in SYSTEMS.items()])
            copy("domain", ["name"], [(f"d{i:02d}.example.jp",) for i in range(20)])
            copy("building", ["id", "name", "domain", "source_system", "spec", "pinned_wave"],
                 [(b.id, b.name, b.domain, b.source_system,
                   json.dumps({"blackout_dates": sorted(d.isoformat() for d in b.blackout_dates)}), b.pinned_wave)
                  for b in loads])
            copy("household", ["id", "building_id"], [(f"{b.id}-{h}", b.id) for b in loads for h in range(b.households)])
            copy("mailbox", ["id", "household_id", "address", "source_login", "protocol", "quota_bytes"], mailboxes)
            cur.execute("ANALYZE")
        res["db_fill_s"] = round(time.perf_counter() - t, 2)

        def read():
            inp = plan_store.read_inventory(conn)
            conn.rollback()
            return inp
        inp, res["read_inventory_s"], _ = timed(read, runs)
        lim = dataclasses.replace(plan_limits, closed_waves=inp.closed_waves)
        plan = plan_waves(inp.loads, lim)
        t = time.perf_counter()
        r1 = plan_store.store_plan(conn, plan, inp)
        res["store_first_s"] = round(time.perf_counter() - t, 3)
        res["store_first"] = dataclasses.asdict(r1)
        r2, res["store_unchanged_s"], _ = timed(lambda: plan_store.store_plan(conn, plan, inp), runs)
        assert r2.unchanged, r2

        def whole():
            with plan_store.plan_transaction(conn):
                i = plan_store.read_inventory(conn)
                p = plan_waves(i.loads, dataclasses.replace(plan_limits, closed_waves=i.closed_waves))
                return plan_store.store_plan(conn, p, i, commit=False)
        r3, res["cli_total_s"], _ = timed(whole, runs)
        assert r3.unchanged
        for k in ("read_inventory_s", "store_unchanged_s", "cli_total_s"):
            res[k] = round(res[k], 3)
        conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--buildings", type=int, default=5000)
    ap.add_argument("--households", type=int, default=400_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--db", action="store_true", help="also measure read/store against PostgreSQL")
    args = ap.parse_args()

    t = time.perf_counter()
    loads, snaps, mailboxes = synthetic(args.buildings, args.households)
    gen_s = time.perf_counter() - t
    # the generated inventory (millions of objects) would make every GC pass of the measured code
    # walk it; a real `mailshift plan` process does not hold it
    import gc
    gc.collect()
    gc.freeze()
    lim = limits()
    plan, plan_s, plan_runs = timed(lambda: plan_waves(loads, lim), args.runs)
    snaps = [s.replace(wave=plan.assignment[s.id]) for s in snaps]
    waves = [{"number": w.number, "name": w.name, "kind": w.kind, "start_date": w.start_date.isoformat()}
             for w in plan.waves]
    with tempfile.TemporaryDirectory() as d:
        def write():
            # a new plan hash each run so every file is really rewritten
            write.n += 1
            return snapshot.write_snapshot(d, snaps, plan_id=write.n, plan_hash=f"{write.n:064x}", waves=waves,
                                           source_systems=SYSTEMS, shards=args.shards)
        write.n = 0
        manifest, write_s, _ = timed(write, args.runs)
        _, manifest_s, _ = timed(lambda: snapshot.read_manifest(d), args.runs)
        per_shard = []
        for k in range(args.shards):
            _, med, _ = timed(lambda k=k: snapshot.load_shard(d, k), args.runs)
            per_shard.append(med)
        fresh = fresh_process_loads(d, args.shards, args.runs)
        _, load_all_s, _ = timed(lambda: snapshot.load_all(d), max(1, args.runs // 2))
        sizes = [f["bytes"] for f in manifest["files"]]
    out = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "inventory": {"buildings": len(loads), "households": sum(b.households for b in loads),
                      "mailboxes": sum(b.mailboxes for b in loads), "gen_s": round(gen_s, 2)},
        "plan": {"waves": len(plan.waves), "plan_s_median": round(plan_s, 3),
                 "plan_s_runs": [round(x, 3) for x in plan_runs],
                 "reasons": dict(sorted(__import__("collections").Counter(
                     w.reasons[b].code for w in plan.waves for b in w.buildings).items()))},
        "fill": fill_ratio(plan, lim),
        "snapshot": {"shards": args.shards, "write_s_median": round(write_s, 3),
                     "total_mb": round(sum(sizes) / 1e6, 2),
                     "shard_mb_median": round(statistics.median(sizes) / 1e6, 3),
                     "shard_mb_max": round(max(sizes) / 1e6, 3),
                     "shard_buildings_median": statistics.median(f["buildings"] for f in manifest["files"]),
                     "manifest_read_ms": round(manifest_s * 1e3, 2),
                     "shard_load_ms_median": round(statistics.median(per_shard) * 1e3, 2),
                     "shard_load_ms_max": round(max(per_shard) * 1e3, 2),
                     "fresh_process_ms": fresh,
                     "load_all_s": round(load_all_s, 3)},
    }
    if args.db:
        out["db"] = bench_db(loads, snaps, mailboxes, lim, args.runs)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
