#!/usr/bin/env python3
"""Inputs and checks of the duration projection (mailshift.inventory.projection).

    .venv/bin/python bench/projection_bench.py rates [--parallel 1,2,4]  # measure copy rates on the lab
    .venv/bin/python bench/projection_bench.py validate                  # predicted vs measured lab wave
    .venv/bin/python bench/projection_bench.py seed [--target 2027-12-31]  # 400,000-household projection

`rates`: the distributed test's corpus (6 buildings, 34 mailboxes, ~6,000 messages, ~70 MB, fresh
unique accounts) is seeded on the lab sources; then, for each parallelism N, a fresh database and
emptied destination mailboxes, and N processes copy every mailbox (largest first, one IMAP
connection pair each, `jobs.copy_one`, prestage). With N=1 each mailbox is timed alone and
`seconds = mailbox_s + messages * message_s + bytes / bytes_per_s` is fitted (least squares);
the aggregate MB/s at the highest N is the machine's (= one lab worker's) cap. Writes
`.lab/bench/projection-rates.json` (usable as `mailshift plan --projection --rates FILE`).

`validate`: reads `.lab/celery-airflow_celery/distributed-latest.json` (written by `make
test-distributed`): the measured wave duration and the Airflow per-task overhead (median of
queued->end of its mark_proven/announce/summary tasks, which do no mail work), the cluster (2
workers, slots, pools), and predicts the wave from the rates file and the corpus's mailbox sizes.

`seed`: the planner bench's synthetic ISP inventory (5,000 buildings, 400,000 households, ~500,000
mailboxes, 4 source systems with 40/20/20/10 connections), planned with its limits, projected
with the measured rates; plus the workers needed for --target.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "tests"), str(ROOT / "bench")]

RATES_FILE = "projection-rates.json"


def _bench_dir(cfg) -> Path:
    d = Path(cfg.root) / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _distributed_inventory():
    from e2e.test_distributed import _inventory

    return _inventory()


def _copy_worker(args):
    dsn, ids = args
    import psycopg2

    from mailshift.jobs import copy_one

    conn = psycopg2.connect(dsn)
    out = []
    for mid in ids:
        t = time.monotonic()
        s = copy_one(conn, mid, "prestage")
        out.append((mid, s.copied, s.bytes, time.monotonic() - t))
    conn.close()
    return out


def cmd_rates(args) -> int:
    import numpy as np
    import psycopg2

    from e2e.test_distributed import _seed_without_oversize
    from lab import corpus, users
    from lab.config import LabConfig
    from lab.connections import airflow_conn_env
    from mailshift.inventory.load import load_inventory
    from support.mail import fresh_database

    cfg = LabConfig.load()
    os.environ.update(airflow_conn_env(cfg))
    inv = _distributed_inventory()
    work = Path(cfg.root) / "bench" / "projection"
    exports = corpus.write_exports(inv, work / "exports", cfg)
    t = time.monotonic()
    seeded = _seed_without_oversize(cfg, inv)
    print(f"seeded {seeded['mailboxes']} mailboxes, {seeded['messages']} messages in {time.monotonic() - t:.1f}s",
          file=sys.stderr)
    result = {"corpus": {k: v for k, v in seeded.items() if isinstance(v, int | float)}, "runs": []}
    per_mailbox = None
    for n in [int(x) for x in args.parallel.split(",")]:
        for m in inv.mailboxes:
            users.reset_mailbox(cfg, "dest", m.address.lower())
        with fresh_database(cfg) as dsn:
            conn = psycopg2.connect(dsn)
            load_inventory(conn, exports)
            with conn, conn.cursor() as cur:
                cur.execute("SELECT m.id FROM mailbox m ORDER BY m.id")
                ids = [r[0] for r in cur.fetchall()]
            size = {m.address.lower(): sum(p.size for p in corpus.mailbox_plan(inv, m) if "oversize" not in p.tags)
                    for m in inv.mailboxes}
            with conn, conn.cursor() as cur:
                cur.execute("SELECT id, lower(address) FROM mailbox")
                by_id = {i: size[a] for i, a in cur.fetchall()}
            conn.close()
            ids.sort(key=lambda i: -by_id[i])
            shares = [(dsn, ids[k::n]) for k in range(n)]
            t = time.monotonic()
            if n == 1:
                rows = _copy_worker(shares[0])
            else:
                with mp.get_context("fork").Pool(n) as pool:
                    rows = [r for part in pool.map(_copy_worker, shares) for r in part]
            wall = time.monotonic() - t
        msgs = sum(r[1] for r in rows)
        nbytes = sum(r[2] for r in rows)
        run = {"connections": n, "wall_s": round(wall, 2), "messages": msgs, "mb": round(nbytes / 1e6, 2),
               "mb_per_s": round(nbytes / 1e6 / wall, 3), "msg_per_s": round(msgs / wall, 1)}
        result["runs"].append(run)
        print(json.dumps(run), file=sys.stderr)
        if n == 1:
            per_mailbox = rows
    if per_mailbox:
        a = np.array([[1.0, r[1], r[2]] for r in per_mailbox])
        y = np.array([r[3] for r in per_mailbox])
        (c0, c1, c2), *_ = np.linalg.lstsq(a, y, rcond=None)
        pred = a @ np.array([c0, c1, c2])
        result["fit"] = {"mailbox_s": round(float(c0), 3), "message_s": round(float(c1), 5),
                         "bytes_per_s": round(1 / float(c2)) if c2 > 0 else None,
                         "r2": round(1 - float(((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()), 3),
                         "mailboxes": len(per_mailbox)}
    top = max(result["runs"], key=lambda r: r["mb_per_s"])
    fit = result.get("fit", {})
    result["rates"] = {"mailbox_s": max(fit.get("mailbox_s", 0.5), 0.0), "message_s": max(fit.get("message_s", 0.0), 0.0),
                       "bytes_per_s": fit.get("bytes_per_s") or 2e6,
                       "worker_bytes_per_s": round(top["mb_per_s"] * 1e6)}
    result["measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    path = _bench_dir(cfg) / RATES_FILE
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"written {path}", file=sys.stderr)
    return 0


def _ts(v):
    return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() if v else None


def _airflow_overhead(tasks) -> dict:
    """Per-task cost of Airflow on Celery, from tasks that do no mail work (queued -> end)."""
    pure = [t for t in tasks if t["task_id"] in ("mark_proven", "announce", "summary") and t["queued_when"]
            and t["end_date"]]
    q2e = [_ts(t["end_date"]) - _ts(t["queued_when"]) for t in pure]
    return {"task_overhead_s": round(statistics.median(q2e), 2), "samples": len(q2e)}


def cmd_validate(args) -> int:
    from lab import corpus
    from lab.celery_lab import state_dir
    from lab.config import LabConfig
    from mailshift.inventory import projection as pr

    cfg = LabConfig.load()
    doc = json.loads((state_dir(cfg) / "distributed-latest.json").read_text())
    rates_doc = json.loads((_bench_dir(cfg) / RATES_FILE).read_text())
    inv = _distributed_inventory()
    sizes = {}
    for m in inv.mailboxes:
        plan = [p for p in corpus.mailbox_plan(inv, m) if "oversize" not in p.tags]
        sizes.setdefault(m.building_id, []).append((len(plan), sum(p.size for p in plan)))
    system = {b.id: b.source_system for b in inv.buildings}
    w1 = doc["workers"]
    out = {"inputs": {}, "waves": []}
    for key in args.runs.split(","):
        run = doc["runs"].get(key)
        if not run:
            continue
        over = _airflow_overhead(run["tasks"])
        rates = pr.Rates(**{**rates_doc["rates"], "task_overhead_s": over["task_overhead_s"]})
        # both lab workers share one 2-core machine: its measured cap is split between them
        rates = pr.Rates(**{**rates.to_dict(), "worker_bytes_per_s": rates.worker_bytes_per_s / len(w1)})
        cluster = pr.Cluster(len(w1), min(w["concurrency"] for w in w1), doc["pool_slots"], 4)
        wave = pr.WaveWork(run["wave"], None, tuple(pr.BuildingWork(b, system[b], tuple(sizes[b]))
                                                    for b in sorted(run["buildings"])))
        p = pr.project_wave(wave, rates, cluster)
        measured = run["seconds"]
        out["waves"].append({"run": key, "wave": run["wave"], "predicted_s": round(p.seconds, 1),
                             "measured_s": measured, "error": round((p.seconds - measured) / measured, 3),
                             "bottleneck": p.bottleneck, "totals": wave.totals, "task_overhead": over,
                             "rates": rates.to_dict(), "cluster": cluster.to_dict()})
    print(json.dumps(out, indent=1))
    return 0


def cmd_seed(args) -> int:
    import gc

    from lab.config import LabConfig
    from mailshift.inventory import projection as pr
    from mailshift.inventory.planner import estimate_mailbox, plan_waves
    from plan_bench import SYSTEMS, limits, synthetic

    try:
        rates_doc = json.loads((_bench_dir(LabConfig.load()) / RATES_FILE).read_text())
    except Exception:  # noqa: BLE001 - no lab: the documented defaults
        rates_doc = {"rates": {}}
    t = time.monotonic()
    loads, _snaps, mailboxes = synthetic(5000, 400_000)
    gc.freeze()
    lim = limits()
    plan = plan_waves(loads, lim)
    t_plan = time.monotonic() - t
    system = {b.id: b.source_system for b in loads}
    per_building: dict[str, list] = {}
    for _mid, hh, _addr, _login, _proto, quota in mailboxes:
        s = estimate_mailbox(quota)
        per_building.setdefault(hh.rsplit("-", 1)[0], []).append((s.messages, s.bytes))
    rates = pr.Rates(**{**rates_doc["rates"], **({"task_overhead_s": args.task_overhead} if args.task_overhead
                                                  else {})})
    if args.worker_mb_per_s:
        rates = pr.Rates(**{**rates.to_dict(), "worker_bytes_per_s": args.worker_mb_per_s * 1e6})
    cluster = pr.Cluster(args.workers, args.concurrency, dict(SYSTEMS), args.parallel_buildings)
    waves = pr.wave_work_from_plan(plan, per_building, system)
    t = time.monotonic()
    proj = pr.project(waves, rates, cluster, days_between=lim.days_between)
    t_proj = time.monotonic() - t
    target = pr.workers_for_target(waves, rates, cluster, dt.date.fromisoformat(args.target), lim.start_date)
    t_target = time.monotonic() - t - t_proj
    d = proj.to_dict()
    summary = {"inventory": {"buildings": len(loads), "households": sum(b.households for b in loads),
                             "mailboxes": len(mailboxes), "bytes": sum(b.bytes for b in loads),
                             "messages": sum(b.messages for b in loads), "systems": SYSTEMS},
               "waves": len(plan.waves), "plan_s": round(t_plan, 2), "projection_s": round(t_proj, 2),
               "target_search_s": round(t_target, 2), "rates": d["rates"], "cluster": d["cluster"],
               "effective_bytes_per_s_per_connection": d["effective_bytes_per_s_per_connection"],
               "back_to_back_days": d["back_to_back_days"], "calendar_end": d["calendar_end"],
               "waves_longer_than_spacing": d["waves_longer_than_spacing"], "target": target,
               "wave_hours": {"pilot": d["waves"][0]["hours"],
                              "regular_median": statistics.median(w["hours"] for w in d["waves"][1:]),
                              "max": max(w["hours"] for w in d["waves"])},
               "bottlenecks": {b: sum(1 for w in d["waves"] if w["bottleneck"] == b)
                               for b in {w["bottleneck"] for w in d["waves"]}},
               "first_waves": d["waves"][:3]}
    print(json.dumps(summary, indent=1))
    if args.text:
        print(pr.render(proj, target), file=sys.stderr)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rates")
    r.add_argument("--parallel", default="1,2,4")
    v = sub.add_parser("validate")
    v.add_argument("--runs", default="normal,fault")
    s = sub.add_parser("seed")
    s.add_argument("--workers", type=int, default=8)
    s.add_argument("--concurrency", type=int, default=16)
    s.add_argument("--parallel-buildings", type=int, default=32)
    s.add_argument("--worker-mb-per-s", type=float, help="per worker machine (default: the lab's measured)")
    s.add_argument("--task-overhead", type=float, help="seconds per Airflow task (default: the rates file's)")
    s.add_argument("--target", default="2027-06-30")
    s.add_argument("--text", action="store_true")
    args = ap.parse_args()
    return {"rates": cmd_rates, "validate": cmd_validate, "seed": cmd_seed}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
