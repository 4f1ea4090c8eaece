"""Benchmark parsing of the building DAGs (issue #5, point 3): DagBag per shard file and the real
`airflow dag-processor`, against a synthetic 5,000-building / ~500,000-mailbox snapshot.

    export MAILSHIFT_AIRFLOW_DB=airflow_parse MAILSHIFT_AIRFLOW_API_PORT=14397
    PYTHONPATH=include .venv/bin/python bench/dag_parse_bench.py [--buildings 5000] \
        [--shards 16 8 32] [--runs 3] [--no-processor] [--no-budget-check] [--no-single-shard]

Per shard count N (16 uses the repository's dags/; other counts use a temporary dags folder
holding the wave + cutover files and N generated `mailshift_buildings_shard_NN.py`, identical to
the committed ones but for the shard number):

  dagbag      each shard file parsed by `DagBag` in a FRESH interpreter (`airflow.sdk` and
              `DagBag` imported first, as the dag-processor's parent has them; the mailshift
              import is counted, as in a parser child), then every DAG serialised with
              `DagSerialization.to_dict` as the parser child does; median of --runs per file.
  processor   `airflow dag-processor --num-runs 1` (one parsing loop over every file, then it
              exits) on an emptied metadata DB ($MAILSHIFT_AIRFLOW_DB, never the shared `airflow`);
              afterwards the bench reads back `serialized_dag` / `dag` (count, per-file
              `last_parse_duration` = the parser child's wall time: fork, import, serialise, send)
              and `import_error`, and greps the processor log for "Killing it!" (timeouts).

Then, with the 16-shard snapshot and `MAILSHIFT_SHARD_BUDGET_SECONDS` very low, the budget
check must turn every shard into a recorded import error (loud), and, for contrast, all
buildings in ONE shard under the default `dag_file_processor_timeout` (50 s), once with the
budget check effectively off (MAILSHIFT_SHARD_BUDGET_SECONDS=1000: the file is killed and nothing
records why -- silent) and once with the default 10 s budget (an import error -- loud). Prints one
JSON document.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

# one metadata DB per concurrent Airflow: never default to the shared `airflow` database
os.environ.setdefault("MAILSHIFT_AIRFLOW_DB", "airflow_parse")

from mailshift.inventory import snapshot  # noqa: E402

PY = str(Path(sys.executable))
AIRFLOW = str(Path(sys.executable).with_name("airflow"))

SYSTEMS = {"src-a": 20, "src-b": 10, "src-c": 10}            # id -> max_connections
SYSTEM_WEIGHTS = [0.5, 0.3, 0.2]
N_WAVES = 40
N_DOMAINS = 50
GIVEN = ["taro", "hanako", "yuki", "kenji", "akira", "emi", "sora", "ren", "mei", "daichi", "haruto", "yui",
         "sakura", "kaito", "riko", "sota", "aoi", "hina", "yuto", "mio", "anna", "li", "maria", "john"]
FAMILY = ["sato", "suzuki", "takahashi", "tanaka", "watanabe", "ito", "yamamoto", "nakamura", "kobayashi",
          "kato", "yoshida", "yamada", "sasaki", "yamaguchi", "matsumoto", "inoue", "kimura", "hayashi"]
PLACES = ["minato", "chuo", "shibuya", "setagaya", "nerima", "koto", "ota", "suginami", "itabashi", "adachi",
          "kita", "arakawa", "bunkyo", "meguro", "nakano", "toshima", "sumida", "taito", "edogawa", "katsushika",
          "chofu", "mitaka", "fuchu", "machida", "hachioji"]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk  # noqa: F401  (already imported in the dag-processor before it forks a parser)
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], load_op_links=False)
t2 = time.perf_counter()
data = [DagSerialization.to_dict(d) for d in bag.dags.values()]
t3 = time.perf_counter()
print(json.dumps({"airflow_import_s": t1 - t0, "parse_s": t2 - t1, "serialise_s": t3 - t2, "total_s": t3 - t1,
                  "dags": len(bag.dags), "import_errors": len(bag.import_errors)}))
"""


# ---------------------------------------------------------------------------------------------
# synthetic snapshot

def synthetic(n_buildings: int, mean_mailboxes: float = 100.0, seed: int = 5):
    """SnapshotBuildings (deterministic): lognormal mailbox counts (mean ~100), 3 source systems,
    N_WAVES waves, N_DOMAINS domains, 1 in 6 mailboxes POP3."""
    rng = random.Random(seed)
    domains = [f"{PLACES[k % len(PLACES)]}-{'net' if k < len(PLACES) else 'mail'}.example.jp"
               for k in range(N_DOMAINS)]
    sigma = 0.9
    mu = __import__("math").log(mean_mailboxes) - sigma * sigma / 2
    out, mid = [], 10_000_000
    for i in range(n_buildings):
        bid = f"B{100000 + i}"
        system = rng.choices(list(SYSTEMS), SYSTEM_WEIGHTS)[0]
        domain = domains[rng.randrange(N_DOMAINS)]
        n = max(1, min(3000, int(rng.lognormvariate(mu, sigma))))
        mbs = []
        for _ in range(n):
            mid += 1
            local = f"{rng.choice(GIVEN)}.{rng.choice(FAMILY)}{mid % 9973}"
            mbs.append(snapshot.SnapshotMailbox(mid, f"{local}@{domain}", "pop3" if rng.random() < 1 / 6 else "imap"))
        wave = 1 + min(N_WAVES - 1, i * N_WAVES // n_buildings)
        out.append(snapshot.SnapshotBuilding(bid, f"{domain.split('-')[0].title()} Residence {i}", domain, system,
                                             snapshot.pool_name(system), wave, SYSTEMS[system], mbs))
    return out


def waves() -> list[dict]:
    start = dt.date(2027, 1, 4)
    return [{"number": n, "name": f"wave {n}", "kind": "pilot" if n == 1 else "regular",
             "start_date": (start + dt.timedelta(days=7 * (n - 1))).isoformat()} for n in range(1, N_WAVES + 1)]


def write(directory: Path, buildings, shards: int) -> dict:
    t = time.perf_counter()
    m = snapshot.write_snapshot(directory, buildings, plan_id=1, plan_hash=f"{shards:064x}", waves=waves(),
                                source_systems=SYSTEMS, shards=shards)
    m["_write_s"] = time.perf_counter() - t
    return m


def dags_folder(work: Path, shards: int) -> Path:
    """The repository's dags/ for 16 shards, else a copy with `shards` shard files."""
    committed = sorted((REPO / "dags").glob("mailshift_buildings_shard_*.py"))
    if shards == len(committed):  # the committed dags/ (32 shard files)
        return REPO / "dags"
    d = work / f"dags_{shards}"
    d.mkdir(parents=True, exist_ok=True)
    for name in ["mailshift_waves.py"] + [p.name for p in (REPO / "dags").glob("mailshift_cutover_*.py")]:
        shutil.copy(REPO / "dags" / name, d / name)
    template = (REPO / "dags" / "mailshift_buildings_shard_00.py").read_text()
    assert "shard=0," in template and "shard 0 " in template
    for k in range(shards):
        (d / f"mailshift_buildings_shard_{k:02d}.py").write_text(
            template.replace("shard=0,", f"shard={k},").replace("shard 0 ", f"shard {k} "))
    return d


# ---------------------------------------------------------------------------------------------
# (a) DagBag per shard file, fresh interpreter

def dagbag_per_file(env: dict, folder: Path, shards: int, runs: int, limit: int | None = None) -> dict:
    files = [folder / f"mailshift_buildings_shard_{k:02d}.py" for k in range(shards)][:limit]
    per_file = []
    for f in files:
        samples = []
        for _ in range(runs):
            r = subprocess.run([PY, "-c", CHILD, str(f)], env=env, capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(f"{f.name}: {r.stderr[-2000:]}")
            samples.append(json.loads(r.stdout.strip().splitlines()[-1]))
        med = {k: round(statistics.median(s[k] for s in samples), 3)
               for k in ("airflow_import_s", "parse_s", "serialise_s", "total_s")}
        med.update(file=f.name, dags=samples[0]["dags"], import_errors=samples[0]["import_errors"],
                   total_s_runs=[round(s["total_s"], 2) for s in samples])
        per_file.append(med)
        print(f"  dagbag {f.name}: {med['dags']} DAGs parse {med['parse_s']} s + serialise "
              f"{med['serialise_s']} s = {med['total_s']} s (runs {med['total_s_runs']})", file=sys.stderr)
    tot = [p["total_s"] for p in per_file]
    return {"runs": runs, "files_measured": len(per_file), "files": per_file,
            "total_s_median": round(statistics.median(tot), 2), "total_s_max": round(max(tot), 2),
            "parse_s_max": max(p["parse_s"] for p in per_file),
            "serialise_s_max": max(p["serialise_s"] for p in per_file),
            "sum_total_s": round(sum(tot), 1), "dags": sum(p["dags"] for p in per_file),
            "import_errors": sum(p["import_errors"] for p in per_file)}


# ---------------------------------------------------------------------------------------------
# (b) the real dag-processor

def reset_metadata(dsn: str) -> None:
    """Empty what the dag-processor writes (own metadata DB only)."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE dag, import_error, asset, asset_alias, dag_bundle CASCADE")
    finally:
        conn.close()


def read_back(dsn: str, started: dt.datetime) -> dict:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(*) FILTER (WHERE dag_id LIKE 'mailshift\\_building\\_%%'), "
                        "min(created_at), max(created_at), max(last_updated) FROM serialized_dag")
            n, n_buildings, first, last, last_upd = cur.fetchone()
            cur.execute("SELECT relative_fileloc, count(*), max(last_parse_duration), max(last_parsed_time) "
                        "FROM dag WHERE is_stale IS NOT TRUE GROUP BY relative_fileloc ORDER BY 1")
            files = [{"file": r[0], "dags": r[1], "last_parse_duration_s": round(r[2] or 0, 2),
                      "last_parsed_at": r[3].isoformat() if r[3] else None} for r in cur.fetchall()]
            cur.execute("SELECT filename, left(stacktrace, 4000) FROM import_error ORDER BY filename")
            errors = [{"file": r[0], "stacktrace": r[1]} for r in cur.fetchall()]
    finally:
        conn.close()
    return {"serialized_dags": n, "serialized_building_dags": n_buildings,
            "serialised_span_s": round((last - first).total_seconds(), 1) if first else None,
            "first_serialised_after_start_s": round((first - started).total_seconds(), 1) if first else None,
            "last_serialised_after_start_s": round((max(last, last_upd) - started).total_seconds(), 1) if last else None,
            "files": files, "import_errors": errors}


def run_processor(env: dict, dsn: str, folder: Path, snap: Path, log: Path, *, extra_env: dict | None = None,
                  hard_timeout: float = 900) -> dict:
    reset_metadata(dsn)
    e = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(folder), "MAILSHIFT_SNAPSHOT_DIR": str(snap),
         "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "10", **(extra_env or {})}
    cmd = [AIRFLOW, "dag-processor", "--num-runs", "1"]
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, env=e, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=hard_timeout)
            killed_by_bench = False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                rc = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                rc = p.wait()
            killed_by_bench = True
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    kills = [re.sub(r"\s+", " ", m.group(0))[:300] for m in re.finditer(r"Processor for .*?Killing it!", text)]
    res = read_back(dsn, started)
    res.update(command=" ".join(cmd), dags_folder=str(folder), rc=rc, wall_s=round(wall, 1),
               stopped_by_bench=killed_by_bench, timeouts_in_log=kills, log=str(log))
    durs = [f["last_parse_duration_s"] for f in res["files"] if "buildings_shard" in f["file"]]
    res["shard_last_parse_duration_s"] = {"median": round(statistics.median(durs), 2) if durs else None,
                                          "max": max(durs) if durs else None}
    return res


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--buildings", type=int, default=5000)
    ap.add_argument("--shards", type=int, nargs="+", default=[16, 8, 32])
    ap.add_argument("--runs", type=int, default=3, help="fresh-process DagBag runs per file (median)")
    ap.add_argument("--dagbag-shards", type=int, nargs="*", default=None,
                    help="shard counts for the DagBag part (default: all of --shards)")
    ap.add_argument("--dagbag-files", type=int, default=None,
                    help="only the first K shard files in the DagBag part (time on a busy machine)")
    ap.add_argument("--processor-shards", type=int, nargs="*", default=None,
                    help="shard counts for the dag-processor part (default: all of --shards)")
    ap.add_argument("--no-dagbag", action="store_true")
    ap.add_argument("--no-processor", action="store_true")
    ap.add_argument("--no-budget-check", action="store_true")
    ap.add_argument("--no-single-shard", action="store_true")
    ap.add_argument("--single-shard-budgets", nargs="+", default=["1000", "default"],
                    help="MAILSHIFT_SHARD_BUDGET_SECONDS values for the 1-shard contrast ('default' = unset; "
                         "1000 = check effectively off: what happens without it)")
    ap.add_argument("--low-budget", type=float, default=0.5, help="MAILSHIFT_SHARD_BUDGET_SECONDS for the loud check")
    ap.add_argument("--workdir", default=None, help="default: a temporary directory (removed at the end)")
    ap.add_argument("--drop-db", action="store_true", help="drop the bench's metadata DB at the end")
    args = ap.parse_args()

    from lab import airflow_home
    from lab.config import LabConfig

    if airflow_home.AIRFLOW_DB == "airflow":
        sys.exit("refusing to use the shared `airflow` metadata DB: export MAILSHIFT_AIRFLOW_DB=airflow_parse")
    cfg = LabConfig.load()
    airflow_home.ensure_metadata_db(cfg)
    env = {**os.environ, **airflow_home.airflow_env(cfg)}
    env.pop("MAILSHIFT_SHARD_BUDGET_SECONDS", None)
    dsn = airflow_home.metadata_url(cfg).replace("postgresql+psycopg2://", "postgresql://")

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dag_parse_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    buildings = synthetic(args.buildings)
    gen_s = time.perf_counter() - t
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_start": os.getloadavg()},
        "airflow": __import__("importlib.metadata").metadata.version("apache-airflow"),
        "metadata_db": airflow_home.AIRFLOW_DB,
        "snapshot": {"buildings": len(buildings), "mailboxes": sum(b.mailbox_count for b in buildings),
                     "max_mailboxes_per_building": max(b.mailbox_count for b in buildings),
                     "source_systems": len(SYSTEMS), "waves": N_WAVES,
                     "domains": len({b.domain for b in buildings}), "gen_s": round(gen_s, 1)},
        "expected_dags": len(buildings) + N_WAVES + 2 * len({b.domain for b in buildings}),
        "shard_budget_s": 10, "by_shards": {},
    }
    dagbag_shards = args.shards if args.dagbag_shards is None else args.dagbag_shards
    try:
        for n in args.shards:
            snap = work / f"snap_{n}"
            m = write(snap, buildings, n)
            folder = dags_folder(work, n)
            sizes = [f["bytes"] for f in m["files"]]
            entry = {"snapshot_write_s": round(m["_write_s"], 1),
                     "shard_buildings_max": max(f["buildings"] for f in m["files"]),
                     "shard_mailboxes_max": max(f["mailboxes"] for f in m["files"]),
                     "shard_mb_max": round(max(sizes) / 1e6, 2)}
            result["by_shards"][str(n)] = entry
            print(f"shards={n}: snapshot {snap}, dags {folder}", file=sys.stderr)
            if not args.no_dagbag and n in dagbag_shards:
                entry["dagbag"] = dagbag_per_file({**env, "MAILSHIFT_SNAPSHOT_DIR": str(snap)}, folder, n,
                                                  args.runs, args.dagbag_files)
            if not args.no_processor and (args.processor_shards is None or n in args.processor_shards):
                pr = run_processor(env, dsn, folder, snap, work / f"processor_{n}.log")
                entry["processor"] = pr
                print(f"  processor: {pr['serialized_dags']} serialised ({pr['serialized_building_dags']} "
                      f"buildings), shard max {pr['shard_last_parse_duration_s']['max']} s, wall {pr['wall_s']} s, "
                      f"import errors {len(pr['import_errors'])}, timeouts {len(pr['timeouts_in_log'])}",
                      file=sys.stderr)
        if not args.no_budget_check:
            n = 16
            snap = work / f"snap_{n}"
            if not (snap / "manifest.json").exists():
                write(snap, buildings, n)
            pr = run_processor(env, dsn, dags_folder(work, n), snap, work / "processor_low_budget.log",
                               extra_env={"MAILSHIFT_SHARD_BUDGET_SECONDS": str(args.low_budget)})
            for e in pr["import_errors"]:
                lines = [ln for ln in e["stacktrace"].splitlines() if ln.strip()]
                e["last_line"] = lines[-1] if lines else ""
                del e["stacktrace"]
            result["budget_check"] = {"MAILSHIFT_SHARD_BUDGET_SECONDS": args.low_budget, **pr}
            print(f"budget check: {len(pr['import_errors'])} import errors, "
                  f"{pr['serialized_building_dags']} building DAGs", file=sys.stderr)
        if not args.no_single_shard:
            snap = work / "snap_1"
            m = write(snap, buildings, 1)
            result["single_shard"] = {}
            for budget in args.single_shard_budgets:
                extra = {} if budget == "default" else {"MAILSHIFT_SHARD_BUDGET_SECONDS": budget}
                pr = run_processor(env, dsn, dags_folder(work, 1), snap, work / f"processor_1_budget_{budget}.log",
                                   extra_env=extra, hard_timeout=300)
                for e in pr["import_errors"]:
                    lines = [ln for ln in e["stacktrace"].splitlines() if ln.strip()]
                    e["last_line"] = lines[-1] if lines else ""
                    del e["stacktrace"]
                result["single_shard"][f"budget_{budget}"] = {
                    "shard_mb": round(m["files"][0]["bytes"] / 1e6, 1), "dag_file_processor_timeout_s": 50, **pr}
                print(f"single shard, budget {budget}: {pr['serialized_building_dags']} building DAGs, import "
                      f"errors {len(pr['import_errors'])}, timeouts {len(pr['timeouts_in_log'])}", file=sys.stderr)
    finally:
        result["machine"]["load_avg_end"] = os.getloadavg()
        if args.drop_db:
            import psycopg2

            admin = psycopg2.connect(cfg.pg_admin_dsn)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {airflow_home.AIRFLOW_DB} WITH (FORCE)")
            admin.close()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
