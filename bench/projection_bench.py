#!/usr/bin/env python3
"""Inputs and checks of the duration projection (mailshift.planning.projection).

    .venv/bin/python bench/projection_bench.py rates [--parallel 1,2,4]  # measure copy rates on the lab
    .venv/bin/python bench/projection_bench.py probe                     # per-message vs per-byte cost
    .venv/bin/python bench/projection_bench.py validate                  # predicted vs measured lab wave
    .venv/bin/python bench/projection_bench.py seed [--target 2027-12-31]  # 400,000-household projection

`rates`: the distributed test's corpus (6 buildings, 34 mailboxes, ~6,000 messages, ~70 MB, fresh
unique accounts) is seeded on the lab sources; then, for each parallelism N, a fresh database and
emptied destination mailboxes, and N processes copy every mailbox (largest first, one IMAP
connection pair each, `jobs.copy_one`, prestage). With N=1 each mailbox is timed alone and
`seconds = mailbox_s + messages * message_s + bytes / bytes_per_s` is fitted (least squares);
the aggregate rate at the best N over the N=1 rate is the machine's (= one lab worker's)
`worker_lanes`. Writes
`.lab/bench/projection-rates.json` (usable as `mailshift plan --projection --rates FILE`).

`validate`: reads `.lab/celery-airflow_celery/distributed-latest.json` (written by `make
test-distributed`: waves 1 "pilot", 2 "regular", 3 "fault"): calibrates the Airflow-side costs
(task overhead, preflight per mailbox, verify fixed cost; `projection.calibrate`) on the pilot
wave's task instances, then predicts every wave from the rates file, the cluster (2 workers,
slots, pools) and the corpus's mailbox sizes, and prints predicted vs measured.

`seed`: the planner bench's synthetic ISP inventory (5,000 buildings, 400,000 households, ~500,000
mailboxes, 4 source systems with 40/20/20/10 connections), planned with its limits, projected
with the lab's rates as calibrated by `validate` (file key `calibrated`, else `rates`); plus the
workers needed for --target (back to back) and for the plan's weekly calendar.
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

    from mailshift.copy.copy_one import copy_one

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
    path = _bench_dir(cfg) / RATES_FILE
    if per_mailbox is None and path.exists():  # no N=1 run this time: keep the earlier fit and runs
        old = json.loads(path.read_text())
        result["fit"] = old.get("fit", {})
        seen = {r["connections"] for r in result["runs"]}
        result["runs"] = sorted([r for r in old.get("runs", []) if r["connections"] not in seen] + result["runs"],
                                key=lambda r: r["connections"])
    top = max(result["runs"], key=lambda r: r["mb_per_s"])
    fit = result.get("fit", {})
    # the corpus's message sizes are too alike to separate bytes from messages: the byte rate is
    # the `probe` fit's when there is one (equal-size mailboxes from 1 kB to 2 MB per message)
    probe = json.loads(path.read_text()).get("probe_fit") if path.exists() else None
    if probe:
        result["probe_fit"] = probe
    result["rates"] = {"mailbox_s": max(fit.get("mailbox_s", 0.5), 0.0), "message_s": max(fit.get("message_s", 0.0), 0.0),
                       "bytes_per_s": (probe or {}).get("bytes_per_s") or 2e6,
                       # connections one machine runs at full speed: aggregate at the best N / one connection
                       "worker_lanes": round(top["msg_per_s"] / next(r["msg_per_s"] for r in result["runs"]
                                                                     if r["connections"] == 1), 2)}
    result["measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"written {path}", file=sys.stderr)
    return 0


def _ts(v):
    return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() if v else None


PROBES = ((300, 1_000), (100, 1_000), (150, 64_000), (40, 256_000), (20, 1_000_000), (10, 2_000_000))


def cmd_probe(args) -> int:
    """Separate the per-message and per-byte costs: mailboxes of equal-sized messages (from 300 x 1 kB
    to 10 x 2 MB) on src-a, each copied alone over one connection, 3-parameter least squares."""
    import datetime as _dt

    import numpy as np
    import psycopg2
    from integration.test_copier import run

    from lab.config import LabConfig
    from lab.seed import connect_master
    from mailshift.protocols.imap.append import OutgoingMessage, multiappend
    from support.mail import add_mailbox, fresh_database, unique_login

    cfg = LabConfig.load()
    rows = []
    with fresh_database(cfg) as dsn:
        db = psycopg2.connect(dsn)
        for n, size in PROBES * args.repeat:
            mb = add_mailbox(db, cfg, "src-a", unique_login("probe"))
            c = connect_master(cfg, "src-a", mb.source_login)
            when = _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)
            batch = []
            for i in range(n):
                head = f"From: probe@example.jp\r\nSubject: probe {i}\r\nMessage-ID: <{mb.source_login}.{i}@p>\r\n\r\n"
                body = (b"x" * 76 + b"\r\n") * max(1, (size - len(head)) // 78)
                batch.append(OutgoingMessage((), when, head.encode() + body))
                if len(batch) >= 20:
                    assert multiappend(c, "INBOX", batch).ok
                    batch = []
            if batch:
                assert multiappend(c, "INBOX", batch).ok
            c.logout()
            t = time.monotonic()
            s = run(db, cfg, mb)
            rows.append((n, s.bytes, time.monotonic() - t))
            print(json.dumps({"messages": n, "bytes": s.bytes, "seconds": round(rows[-1][2], 2)}), file=sys.stderr)
        db.close()
    a = np.array([[1.0, r[0], r[1]] for r in rows])
    y = np.array([r[2] for r in rows])
    (c0, c1, c2), *_ = np.linalg.lstsq(a, y, rcond=None)
    pred = a @ np.array([c0, c1, c2])
    fit = {"mailbox_s": round(float(c0), 3), "message_s": round(float(c1), 5),
           "bytes_per_s": round(1 / float(c2)) if c2 > 0 else None,
           "r2": round(1 - float(((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()), 3), "mailboxes": len(rows),
           "rows": rows}
    path = _bench_dir(cfg) / RATES_FILE
    doc = json.loads(path.read_text()) if path.exists() else {"rates": {}}
    doc["probe_fit"] = fit
    if fit["bytes_per_s"]:  # only the byte rate: mailbox and message costs come from the real corpus (`rates`)
        doc["rates"]["bytes_per_s"] = fit["bytes_per_s"]
    path.write_text(json.dumps(doc, indent=1))
    print(json.dumps(fit, indent=1))
    return 0


def cmd_validate(args) -> int:
    """Calibrate the Airflow-side costs on the pilot wave, predict the other waves, compare."""
    from lab import corpus
    from lab.celery_lab import state_dir
    from lab.config import LabConfig
    from mailshift.planning import projection as pr

    cfg = LabConfig.load()
    doc = json.loads((state_dir(cfg) / "distributed-latest.json").read_text())
    rates_doc = json.loads((_bench_dir(cfg) / RATES_FILE).read_text())
    inv = _distributed_inventory()
    sizes = {}
    for m in inv.mailboxes:  # the corpus's real mailbox sizes, known before any copy
        plan = [p for p in corpus.mailbox_plan(inv, m) if "oversize" not in p.tags]
        sizes.setdefault(m.building_id, []).append((len(plan), sum(p.size for p in plan)))
    system = {b.id: b.source_system for b in inv.buildings}
    workers = doc["workers"]
    base = pr.Rates(**rates_doc["rates"])
    # both lab workers share one machine: its measured capacity is split between them
    base = pr.Rates(**{**base.to_dict(), "worker_lanes": base.worker_lanes / len(workers)})
    cluster = pr.Cluster(len(workers), sum(w["concurrency"] for w in workers) // len(workers), doc["pool_slots"], 4)

    def wave_of(run):
        return pr.WaveWork(run["wave"], None, tuple(pr.BuildingWork(b, system[b], tuple(sizes[b]))
                                                    for b in sorted(run["buildings"])))

    cal_run = doc["runs"][args.calibrate]
    rates, samples = pr.calibrate(base, cal_run["tasks"], {b.id: b for b in wave_of(cal_run).buildings})
    out = {"calibrated_on": args.calibrate, "rates": rates.to_dict(), "calibration_samples": samples,
           "cluster": cluster.to_dict(), "waves": []}
    for key, run in doc["runs"].items():
        wave = wave_of(run)
        p = pr.project_wave(wave, rates, cluster)
        measured = run["seconds"]
        copies = [t for t in run["tasks"] if t["task_id"] == "copy" and t["state"] == "success"]
        out["waves"].append({"run": key, "wave": run["wave"], "predicted_s": round(p.seconds, 1),
                             "measured_s": measured, "error": round((p.seconds - measured) / measured, 3),
                             "bottleneck": p.bottleneck, "totals": wave.totals,
                             "copy_task_s_measured_sum": round(sum(t["duration"] or 0 for t in copies), 1),
                             "copy_connection_s_model": {k: round(v, 1) for k, v in p.copy_connection_seconds.items()},
                             "note": "calibration wave" if key == args.calibrate else
                                     ("worker killed mid-copy (not modelled)" if key == "fault" else "prediction")})
    # the lab-calibrated rates (worker_lanes back to one whole machine) for `seed` and --rates
    rates_doc["calibrated"] = {**rates.to_dict(), "worker_lanes": rates_doc["rates"].get("worker_lanes")}
    (_bench_dir(cfg) / RATES_FILE).write_text(json.dumps(rates_doc, indent=1))
    print(json.dumps(out, indent=1))
    return 0


def cmd_seed(args) -> int:
    import gc

    from plan_bench import SYSTEMS, limits, synthetic

    from lab.config import LabConfig
    from mailshift.planning import projection as pr
    from mailshift.planning.planner import estimate_mailbox, plan_waves

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
    base = rates_doc.get("calibrated") or rates_doc["rates"]
    rates = pr.Rates(**{**base, **({"task_overhead_s": args.task_overhead} if args.task_overhead else {})})
    if args.worker_lanes:
        rates = pr.Rates(**{**rates.to_dict(), "worker_lanes": args.worker_lanes})
    cluster = pr.Cluster(args.workers, args.concurrency, dict(SYSTEMS), args.parallel_buildings)
    waves = pr.wave_work_from_plan(plan, per_building, system)
    t = time.monotonic()
    proj = pr.project(waves, rates, cluster, days_between=lim.days_between)
    t_proj = time.monotonic() - t
    target = pr.workers_for_target(waves, rates, cluster, dt.date.fromisoformat(args.target), lim.start_date)
    calendar = pr.workers_for_calendar(waves, rates, cluster, lim.days_between)
    t_target = time.monotonic() - t - t_proj
    d = proj.to_dict()
    summary = {"inventory": {"buildings": len(loads), "households": sum(b.households for b in loads),
                             "mailboxes": len(mailboxes), "bytes": sum(b.bytes for b in loads),
                             "messages": sum(b.messages for b in loads), "systems": SYSTEMS},
               "waves": len(plan.waves), "plan_s": round(t_plan, 2), "projection_s": round(t_proj, 2),
               "target_search_s": round(t_target, 2), "rates": d["rates"], "cluster": d["cluster"],
               "copy_slowdown": d["copy_slowdown"],
               "back_to_back_days": d["back_to_back_days"], "calendar_end": d["calendar_end"],
               "waves_longer_than_spacing": d["waves_longer_than_spacing"], "target": target,
               "calendar": calendar,
               "wave_hours": {"pilot": d["waves"][0]["hours"],
                              "regular_median": statistics.median(w["hours"] for w in d["waves"][1:]),
                              "max": max(w["hours"] for w in d["waves"])},
               "bottlenecks": {b: sum(1 for w in d["waves"] if w["bottleneck"] == b)
                               for b in {w["bottleneck"] for w in d["waves"]}},
               "first_waves": d["waves"][:3]}
    print(json.dumps(summary, indent=1))
    if args.text:
        print(pr.render(proj, target, None, calendar), file=sys.stderr)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rates")
    r.add_argument("--parallel", default="1,2,4")
    pb = sub.add_parser("probe")
    pb.add_argument("--repeat", type=int, default=1)
    v = sub.add_parser("validate")
    v.add_argument("--calibrate", default="pilot", help="run whose task instances calibrate the Airflow costs")
    s = sub.add_parser("seed")
    s.add_argument("--workers", type=int, default=8)
    s.add_argument("--concurrency", type=int, default=16)
    s.add_argument("--parallel-buildings", type=int, default=32)
    s.add_argument("--worker-lanes", type=float, help="full-speed connections per worker (default: the lab's)")
    s.add_argument("--task-overhead", type=float, help="seconds per Airflow task (default: the rates file's)")
    s.add_argument("--target", default="2027-06-30")
    s.add_argument("--text", action="store_true")
    args = ap.parse_args()
    return {"rates": cmd_rates, "probe": cmd_probe, "validate": cmd_validate, "seed": cmd_seed}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
