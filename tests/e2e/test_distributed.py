"""The scale-out path for real: Airflow on the CeleryExecutor (Redis broker, PostgreSQL metadata DB
and result backend) with two Celery workers, each consuming its own queues, runs waves of
buildings against the lab.

- `test_waves_on_two_celery_workers`: waves 1 (pilot) and 2, two buildings each, through the
  scheduler: the copy tasks go to their source system's queue, run on both workers, never exceed
  their pool (the source system's connection budget across all workers), and every message is at
  the destination exactly once (servers read directly, ledger, proof).
- `test_worker_killed_mid_copy`: during wave 3, worker w1 (and every task process under
  it) is SIGKILLed while one of its copy tasks is half-way through a mailbox; the scheduler fails
  the orphaned task after the heartbeat timeout, the retry runs on w2, the wave succeeds and every
  message is still there exactly once.

Slow (~7-18 min here, starts a whole Airflow): skipped unless MAILSHIFT_RUN_DISTRIBUTED=1, which
`make test-distributed` sets. Its own metadata DB (`airflow_celery`), API port (base+95), Redis
port (base+79), mailshift database and snapshot: it can run next to the demo's Airflow.
Measured timings go to `.lab/celery-<db>/distributed-latest.json` (bench/projection_bench.py reads it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

pytestmark = [pytest.mark.integration]
#: the long tests; `test_workers_reach_the_api` (short) runs in the normal suite
long_only = pytest.mark.skipif(os.environ.get("MAILSHIFT_RUN_DISTRIBUTED") != "1",
                               reason="slow (whole Airflow on Celery): `make test-distributed` "
                                      "(MAILSHIFT_RUN_DISTRIBUTED=1)")
#: the short check's own metadata DB, Redis and API ports (it can run beside the long test)
SHORT = {"db": "airflow_celery_ci", "redis_offset": 78, "api_offset": 94}

#: pool slots per source system in this test: deliberately below the lab servers' limits (20/10)
#: so that the pools, not the worker slots, bind and the test can check they are never exceeded
POOL_SLOTS = {"src_src_a": 3, "src_src_b": 2}
#: (name, queues, concurrency): w1 only copies; w2 also runs the control tasks (default queue)
WORKERS = (("w1", ("src_src_a", "src_src_b"), 4), ("w2", ("default", "src_src_a", "src_src_b"), 6))
PROFILE = dict(buildings=6, households=(4, 4, 4, 4, 4, 4), mailboxes_per_household=None, pop3=4,
               messages=6000, median=6000, sigma=1.1, cap=2_000_000, big=(6_000_000,),
               size_limit=25 * 1024 * 1024, oversize=27_000_000)


#: MAILSHIFT_CUTOVER_SCALE=N (bench/README.md "Cutover at scale"): an inventory of ~N small mailboxes,
#: every building on lab.mailshift.test; run `-k cutover` (the cutover test copies the waves first)
SCALE = int(os.environ.get("MAILSHIFT_CUTOVER_SCALE") or 0)


def _scale_profile(n: int) -> dict:
    buildings = max(2, 2 * round(n / 130))          # ~65 households and ~1.5 mailboxes per household
    return dict(buildings=buildings, households=(round(n / 1.5 / buildings),) * buildings,
                mailboxes_per_household=None, pop3=4, messages=4 * n, median=1500, sigma=0.5, cap=30_000,
                big=(200_000,), size_limit=25 * 1024 * 1024, oversize=27_000_000)


def _ts(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _inventory():
    """The demo corpus shape, heavier mail, fresh unique logins (never another test's accounts)."""
    from lab import corpus

    corpus.PROFILES.setdefault("distributed", PROFILE)
    if SCALE:
        corpus.PROFILES[f"scale{SCALE}"] = _scale_profile(SCALE)
    inv = corpus.generate_inventory(42, f"scale{SCALE}" if SCALE else "distributed")
    if SCALE:   # one domain holds every building (the ISP's one MX)
        inv.buildings = tuple(dataclasses.replace(b, domain=corpus.DOMAINS[0]) for b in inv.buildings)
    tag = uuid.uuid4().hex[:6]
    fmt = {s.id: s.export_format for s in inv.systems}
    mbs = []
    for i, m in enumerate(inv.mailboxes):
        local = f"x{tag}{i:03d}"
        address = f"{local}@{corpus.DOMAINS[0] if SCALE else m.address.split('@')[1]}"
        mbs.append(dataclasses.replace(m, address=address,
                                       login=address if fmt[m.source_system] == "alpha" else local))
    inv.mailboxes = tuple(mbs)
    return inv


def _seed_without_oversize(cfg, inv):
    """Seed the sources without the corpus's one oversize message (the destination would refuse it
    and the building could only pass with a waiver, which is not what this test is about)."""
    from lab import corpus
    from lab.seed import seed_lab

    original = corpus.mailbox_messages

    def messages(inv_, mb):
        for planned, msg in zip(corpus.mailbox_plan(inv_, mb), original(inv_, mb), strict=True):
            if "oversize" not in planned.tags:
                yield msg

    corpus.mailbox_messages = messages
    try:
        return seed_lab(cfg, inv, workers=4)
    finally:
        corpus.mailbox_messages = original


def test_workers_reach_the_api(lab_config, tmp_path):
    """Short (~1-2 min): the Celery lab as `make test-distributed` starts it - Redis, a worker,
    the api-server from the same environment - runs `mailshift_selfcheck` on the worker. Fails
    when the workers are given an execution API URL the api-server does not listen on (the
    base+95 / base+81 mismatch that broke `make test-distributed` from a fresh clone)."""
    from lab.airflow_services import AirflowServices, listen_port
    from lab.celery_lab import CeleryWorkers, RedisServer, celery_airflow_env, ensure_metadata_db, state_dir

    cfg = lab_config
    env = celery_airflow_env(cfg, db=SHORT["db"], port=cfg.port_base + SHORT["api_offset"],
                             redis=cfg.port_base + SHORT["redis_offset"])
    env.update({"MAILSHIFT_SNAPSHOT_DIR": str(tmp_path / "no-snapshot"),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg.port_base + SHORT["api_offset"] + 3)})
    worker_api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).port
    assert listen_port(cfg, env) == worker_api, "the api-server must listen where the workers call it"
    ensure_metadata_db(cfg, env)
    sdir = state_dir(cfg, SHORT["db"])
    with RedisServer(cfg, int(env["MAILSHIFT_REDIS_PORT"])) as _redis, \
            CeleryWorkers(cfg, env, log_dir=sdir / "logs-workers") as workers:
        workers.start("w2", ["default"], 1)
        with AirflowServices(cfg, env, log_dir=sdir / "logs-services") as af:
            assert af.port == worker_api
            af.wait_for_dag("mailshift_selfcheck", timeout=180)
            run_id = af.trigger("mailshift_selfcheck")
            state = af.wait_for_run("mailshift_selfcheck", run_id, timeout=240)
            tis = _task_instances(af, "mailshift_selfcheck", run_id)
    assert state == "success", (tis, f"see {sdir}/logs-workers/w2.log")
    assert [t["hostname"] for t in tis] == ["w2"], tis


@pytest.fixture(scope="module")
def cluster(lab_config, tmp_path_factory):
    from lab import corpus
    from lab.airflow_services import AirflowServices
    from lab.celery_lab import CeleryWorkers, RedisServer, celery_airflow_env, ensure_metadata_db, state_dir
    from mailshift.cli import main as cli
    from mailshift.inventory.load import load_inventory
    from mailshift.planning import snapshot
    from support.mail import fresh_database

    cfg = lab_config
    root = tmp_path_factory.mktemp("distributed")
    timings = {"started": time.time()}
    inv = _inventory()
    exports = corpus.write_exports(inv, root / "exports", cfg)
    with fresh_database(cfg) as dsn:
        conn = psycopg2.connect(dsn)
        load_inventory(conn, exports)
        t = time.monotonic()
        seeded = _seed_without_oversize(cfg, inv)
        timings["seed_s"] = round(time.monotonic() - t, 1)
        snap = root / "snapshot"
        # three waves of 2 buildings: 1 (pilot: calibrates the projection), 2 (predicted from
        # the pilot and the measured copy rates), 3 (the fault case)
        assert cli(["--db", dsn, "plan", "--pilot-buildings", "2", "--max-households",
                    str(max(8, SCALE // 3)), "--start", "2027-01-11",
                    "--snapshot-dir", str(snap), "--brief"]) == 0
        env = celery_airflow_env(cfg)
        db = urlsplit(dsn)
        env.update({
            "AIRFLOW_CONN_MAILSHIFT_DB": json.dumps(
                {"conn_type": "postgres", "host": db.hostname, "port": db.port, "login": db.username,
                 "password": db.password, "schema": db.path.lstrip("/")}),
            "MAILSHIFT_SNAPSHOT_DIR": str(snap), "MAILSHIFT_REPORTS_DIR": str(root / "reports"),
            "MAILSHIFT_DB_URL": dsn,
        })
        env.pop("MAILSHIFT_COPY_QUEUE", None)
        os.environ.pop("MAILSHIFT_COPY_QUEUE", None)
        t = time.monotonic()
        ensure_metadata_db(cfg, env, fresh=True)  # no runs of an earlier test run in the API
        timings["metadata_db_s"] = round(time.monotonic() - t, 1)
        sdir = state_dir(cfg, env["MAILSHIFT_AIRFLOW_DB"])
        with RedisServer(cfg, int(env["MAILSHIFT_REDIS_PORT"])) as redis, \
                CeleryWorkers(cfg, env, log_dir=sdir / "logs-workers") as workers:
            t = time.monotonic()
            for name, queues, conc in WORKERS:
                workers.start(name, queues, conc)
            timings["workers_ready_s"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            with AirflowServices(cfg, env, log_dir=sdir / "logs-services") as af:
                timings["airflow_up_s"] = round(time.monotonic() - t, 1)
                for name, slots in POOL_SLOTS.items():
                    body = {"name": name, "slots": slots, "description": "distributed test", "include_deferred": False}
                    if _pool_exists(af, name):
                        af.api("PATCH", f"/pools/{name}", body)
                    else:
                        af.api("POST", "/pools", body)
                manifest = snapshot.read_manifest(snap)
                buildings = snapshot.load_all(snap)
                t = time.monotonic()
                for w in manifest["waves"]:
                    af.wait_for_dag(f"mailshift_wave_{w['number']}", timeout=300)
                for b in buildings:
                    af.wait_for_dag(f"mailshift_building_{b.id}", timeout=300)
                    af.api("PATCH", f"/dags/mailshift_building_{b.id}", {"is_paused": False})
                timings["dags_parsed_s"] = round(time.monotonic() - t, 1)
                out = {"cfg": cfg, "dsn": dsn, "conn": conn, "inv": inv, "af": af, "workers": workers, "env": env,
                       "redis": redis, "buildings": buildings, "manifest": manifest, "timings": timings,
                       "seeded": seeded, "state_dir": sdir, "runs": {}}
                try:
                    yield out
                finally:
                    _record(out)
        conn.close()


def _pool_exists(af, name: str) -> bool:
    import urllib.error

    try:
        af.api("GET", f"/pools/{name}")
        return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def _record(c) -> None:
    """Timings and per-task facts of the runs, for bench/README.md and the projection check."""
    doc = {"timings": c["timings"], "pool_slots": POOL_SLOTS, "scale": SCALE,
           "workers": [{"name": n, "queues": list(q), "concurrency": k} for n, q, k in WORKERS],
           "seeded": {k: v for k, v in c["seeded"].items() if isinstance(v, int | float | str)},
           "runs": c["runs"], "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    path = Path(c["state_dir"]) / (f"distributed-scale-{SCALE}.json" if SCALE else "distributed-latest.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nrecorded {path}")


def _wave(c, number):
    return [b for b in c["buildings"] if b.wave == number]


def _task_instances(af, dag_id, run_id, page: int = 100):
    """Every task instance of a run. The REST listing is paginated: the api-server caps `limit`
    at `[api] maximum_page_limit` (100), so one request with limit=1000 returned 100 of a
    900-task cutover run (the "16 final-pass tasks" of the first 537-mailbox run)."""
    out, total = [], None
    while total is None or len(out) < total:
        doc = af.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit={page}&offset={len(out)}"
                            "&order_by=id")
        total = doc["total_entries"]
        if not doc["task_instances"]:
            break
        out.extend(doc["task_instances"])
    assert len(out) == total and len({(t["task_id"], t["map_index"]) for t in out}) == total, (len(out), total)
    return out


def _run_facts(c, number, run_id) -> dict:
    """Wave run timing, per building run and per task instance (queue, pool, worker, tries)."""
    af = c["af"]
    wave_run = af.api("GET", f"/dags/mailshift_wave_{number}/dagRuns/{run_id}")
    facts = {"wave": number, "run_id": run_id, "state": wave_run["state"],
             "start": wave_run["start_date"], "end": wave_run["end_date"],
             "seconds": round(_ts(wave_run["end_date"]) - _ts(wave_run["start_date"]), 1),
             "buildings": {}, "tasks": []}
    for b in _wave(c, number):
        dag_id = f"mailshift_building_{b.id}"
        br = af.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        facts["buildings"][b.id] = {"state": br["state"], "start": br["start_date"], "end": br["end_date"],
                                    "source_system": b.source_system, "mailboxes": len(b.mailboxes)}
        for ti in _task_instances(af, dag_id, run_id):
            facts["tasks"].append({k: ti.get(k) for k in ("dag_id", "task_id", "map_index", "state", "try_number",
                                                          "hostname", "queue", "pool", "queued_when", "start_date",
                                                          "end_date", "duration")})
    for ti in _task_instances(af, f"mailshift_wave_{number}", run_id):
        facts["tasks"].append({k: ti.get(k) for k in ("dag_id", "task_id", "map_index", "state", "try_number",
                                                      "hostname", "queue", "pool", "queued_when", "start_date",
                                                      "end_date", "duration")})
    with c["conn"], c["conn"].cursor() as cur:
        cur.execute("SELECT count(*), coalesce(sum(g.size), 0) FROM message g JOIN mailbox m ON m.id = g.mailbox_id"
                    " JOIN household h ON h.id = m.household_id JOIN building b ON b.id = h.building_id"
                    " WHERE b.wave_id = %s AND g.state = 1", (number,))
        facts["messages"], facts["bytes"] = cur.fetchone()
    return facts


def _max_overlap(intervals) -> int:
    events = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def _assert_exactly_once(c, number) -> dict:
    """Read both servers directly: every source message of every mailbox of the wave is at the
    destination exactly once (same bytes, flags, date) in its mapped folder; the ledger agrees
    and every mailbox is proven."""
    from mailshift.verify import proof_state
    from support.mail import snapshot

    cfg, inv, conn = c["cfg"], c["inv"], c["conn"]
    by_address = {m.address: m for m in inv.mailboxes}
    server_of = {s.id: s.lab_server for s in inv.systems}
    checked = Counter()
    for b in _wave(c, number):
        with conn, conn.cursor() as cur:
            cur.execute("SELECT spec FROM building WHERE id = %s", (b.id,))
            folder_map = (cur.fetchone()[0] or {}).get("folder_map") or {}
        for m in b.mailboxes:
            legacy = by_address[m.address]
            src = snapshot(cfg, server_of[legacy.source_system], legacy.login)
            dst = snapshot(cfg, "dest", legacy.address.lower(), strip_x_uidl=True)
            expected: dict[str, Counter] = {}
            for folder, items in src.items():
                expected.setdefault(folder_map.get(folder, folder), Counter()).update(items)
            for folder, items in expected.items():
                assert dst.get(folder, Counter()) == items, (m.address, folder)
            extra = {f: n for f, n in dst.items() if f not in expected and sum(n.values())}
            assert not extra, (m.address, extra)
            states = dict(_ledger(conn, m.id))
            n_src = sum(sum(v.values()) for v in src.values())
            assert states.get(1, 0) == n_src and set(states) <= {1}, (m.address, states, n_src)
            assert proof_state(conn, m.id).state == "proven", m.address
            checked["mailboxes"] += 1
            checked["messages"] += n_src
    return dict(checked)


def _ledger(conn, mailbox_id):
    with conn, conn.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM message WHERE mailbox_id = %s GROUP BY state", (mailbox_id,))
        return cur.fetchall()


POOLED = ("copy", "verify")   # the mapped tasks that hold connections to a source system


def _check_pools_and_queues(facts) -> dict:
    copies = [t for t in facts["tasks"] if t["task_id"] in POOLED]
    assert copies
    for t in copies:
        assert t["queue"] == t["pool"] and t["pool"] in POOL_SLOTS, t
    overlap = {}
    for pool, slots in POOL_SLOTS.items():
        iv = [(_ts(t["start_date"]), _ts(t["end_date"])) for t in copies if t["pool"] == pool and t["start_date"]]
        overlap[pool] = _max_overlap(iv)
        assert overlap[pool] <= slots, (pool, overlap[pool], slots)
    others = [t for t in facts["tasks"] if t["task_id"] not in POOLED]
    assert {t["queue"] for t in others} == {"default"}
    return overlap


def _run_wave(c, number, key):
    af = c["af"]
    t = time.monotonic()
    run_id = af.trigger(f"mailshift_wave_{number}", {"pass_kind": "prestage", "max_parallel_buildings": 4})
    state = af.wait_for_run(f"mailshift_wave_{number}", run_id, timeout=1200)
    wall = time.monotonic() - t
    facts = _run_facts(c, number, run_id)
    facts["wall_seconds"] = round(wall, 1)
    c["runs"][key] = facts
    assert state == "success", {b: v["state"] for b, v in facts["buildings"].items()}
    assert all(v["state"] == "success" for v in facts["buildings"].values())
    facts["max_concurrent_copies"] = _check_pools_and_queues(facts)
    facts["tasks_per_worker"] = dict(Counter(t["hostname"] for t in facts["tasks"]))
    assert {t["hostname"] for t in facts["tasks"] if t["task_id"] not in POOLED} == {"w2"}  # w1: source queues only
    facts["checked"] = _assert_exactly_once(c, number)
    print(json.dumps({k: v for k, v in facts.items() if k != "tasks"}, indent=1, default=str))
    return facts


@pytest.mark.slow
@long_only
def test_waves_on_two_celery_workers(cluster):
    """Waves 1 (pilot) and 2 through the scheduler on both workers; every message exactly once."""
    pilot = _run_wave(cluster, 1, "pilot")
    regular = _run_wave(cluster, 2, "regular")
    hosts = {t["hostname"] for f in (pilot, regular) for t in f["tasks"] if t["task_id"] == "copy"}
    assert hosts == {"w1", "w2"}, hosts  # the copies were spread over both workers


@pytest.mark.slow
@long_only
def test_worker_killed_mid_copy(cluster):
    """SIGKILL w1 while it is half-way through a mailbox; the retry runs on w2; exactly once."""
    from mailshift.airflow.building import mailbox_batches

    c, af, conn = cluster, cluster["af"], cluster["conn"]
    buildings = {b.id: b for b in _wave(c, 3)}
    batches = {(f"mailshift_building_{bid}", i): [x["mailbox_ids"] for x in mailbox_batches(b.mailboxes)][i]
               for bid, b in buildings.items() for i in range(len(mailbox_batches(b.mailboxes)))}
    t = time.monotonic()
    run_id = af.trigger("mailshift_wave_3", {"pass_kind": "prestage", "max_parallel_buildings": 4})
    victim, deadline = None, time.monotonic() + 600
    while victim is None and time.monotonic() < deadline:
        for bid in buildings:
            dag_id = f"mailshift_building_{bid}"
            try:
                tis = _task_instances(af, dag_id, run_id)
            except Exception:  # noqa: BLE001 - run not created yet
                continue
            for ti in tis:
                if ti["task_id"] != "copy" or ti["state"] != "running" or ti["hostname"] != "w1":
                    continue
                ids = batches[(dag_id, ti["map_index"])]
                with conn, conn.cursor() as cur:  # a pass under way with some messages already copied
                    cur.execute("SELECT p.mailbox_id, count(g.*) FILTER (WHERE g.state = 1) FROM pass p"
                                " LEFT JOIN message g ON g.mailbox_id = p.mailbox_id AND g.pass_id = p.id"
                                " WHERE p.mailbox_id = ANY(%s) AND p.status = 'running' GROUP BY p.mailbox_id",
                                (ids,))
                    progress = {mid: n for mid, n in cur.fetchall() if n >= 5}
                if progress:
                    victim = {"dag_id": dag_id, "map_index": ti["map_index"], "try_number": ti["try_number"],
                              "mailboxes_mid_copy": progress, "at_s": round(time.monotonic() - t, 1)}
                    break
            if victim:
                break
        time.sleep(0.3)
    assert victim, "no copy task of w1 was caught mid-copy"
    killed = c["workers"].kill("w1")
    victim["killed_pids"] = len(killed)
    state = af.wait_for_run("mailshift_wave_3", run_id, timeout=1800)
    wall = time.monotonic() - t
    facts = _run_facts(c, 3, run_id)
    facts.update(wall_seconds=round(wall, 1), victim=victim)
    c["runs"]["fault"] = facts
    assert state == "success", {b: v["state"] for b, v in facts["buildings"].items()}
    after = next(x for x in facts["tasks"] if x["dag_id"] == victim["dag_id"] and x["task_id"] == "copy"
                 and x["map_index"] == victim["map_index"])
    facts["victim_after"] = after
    assert after["state"] == "success" and after["try_number"] > victim["try_number"], after
    assert after["hostname"] == "w2", after  # retried on the surviving worker
    facts["max_concurrent_copies"] = _check_pools_and_queues(facts)
    facts["checked"] = _assert_exactly_once(c, 3)
    print(json.dumps({k: v for k, v in facts.items() if k != "tasks"}, indent=1, default=str))


def _step_name(task_id: str) -> str:
    for pool in POOL_SLOTS:
        task_id = task_id.replace(f"_{pool}", "")
    return task_id


def _cutover_facts(af, dag_id, run_id, samples=()) -> dict:
    """Per step of a cutover run: tasks, wall seconds (first start to last end), each task's
    seconds (median, max), hosts, the most tasks of one pool running at once (= source
    connections the pools allow) and, from `samples` (ConnectionSampler), the connections the
    workers' processes actually held to each lab server at once while the step ran."""
    steps: dict[str, dict] = {}
    for ti in _task_instances(af, dag_id, run_id):
        s = steps.setdefault(_step_name(ti["task_id"]), {"tasks": 0, "states": Counter(), "iv": [], "hosts": Counter(),
                                                         "pools": Counter()})
        s["tasks"] += 1
        s["states"][ti["state"]] += 1
        if ti["start_date"] and ti["end_date"]:
            s["iv"].append((_ts(ti["start_date"]), _ts(ti["end_date"]), ti["pool"]))
            s["hosts"][ti["hostname"]] += 1
            s["pools"][ti["pool"]] += 1
    out = {}
    for name, s in steps.items():
        iv = s.pop("iv")
        s["seconds"] = round(max(e for _, e, _ in iv) - min(b for b, _, _ in iv), 1) if iv else 0
        each = sorted(e - b for b, e, _ in iv)
        s["task_seconds_median"] = round(each[len(each) // 2], 1) if each else 0
        s["task_seconds_max"] = round(each[-1], 1) if each else 0
        s["max_concurrent_per_pool"] = {p: _max_overlap([(b, e) for b, e, q in iv if q == p]) for p in s["pools"]}
        if iv:
            lo, hi = min(b for b, _, _ in iv), max(e for _, e, _ in iv)
            seen = [n for t, n in samples if lo <= t <= hi]
            s["connections_max"] = {srv: max(n.get(srv, 0) for n in seen) for srv in {k for n in seen for k in n}}
        out[name] = {k: dict(v) if isinstance(v, Counter) else v for k, v in s.items()}
    return out


class ConnectionSampler:
    """The TCP connections the Celery workers' processes (worker, pool, task supervisors, tasks)
    hold to each lab server, sampled every `every` s with the load average: the measured
    "connections used" of bench/README.md (the pools only say how many tasks may hold one)."""

    def __init__(self, cfg, workers, every: float = 2.0):
        import threading

        self.ports = {port: name for name, srv in cfg.servers.items()
                      for port in (srv.imap_port, srv.pop3_port, srv.imaps_port) if port}
        self.roots = [p.pid for p in workers.procs.values()]
        self.every, self.samples, self.load = every, [], []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(10)

    def _run(self) -> None:
        import psutil

        while not self.stopped.is_set():
            pids = set()
            for root in self.roots:
                try:
                    pids |= {root, *(p.pid for p in psutil.Process(root).children(recursive=True))}
                except psutil.Error:
                    continue
            n = Counter(self.ports[x.raddr.port] for x in psutil.net_connections(kind="tcp")
                        if x.pid in pids and x.raddr and x.status == psutil.CONN_ESTABLISHED
                        and x.raddr.port in self.ports)
            self.samples.append((time.time(), dict(n)))
            self.load.append(os.getloadavg()[0])
            self.stopped.wait(self.every)


#: mailboxes per mapped task of the measured cutover: 3 in the small run (20 mailboxes: several
#: batches per pool); 25 at scale (2,000 mailboxes = ~80 tasks a step, not ~670 of 3: the task
#: count, not the mail, would be measured)
CUTOVER_MAILBOXES_PER_TASK = 25 if SCALE else 3
CUTOVER_DRAIN_TASKS = 2


def _expected_tasks(conn, domain: str, per_task: int, drain_tasks: int) -> dict:
    """Mapped tasks per step from the domain's mailboxes per pool (steps.batch_rows' rule)."""
    from mailshift.planning.snapshot import pool_name
    from mailshift.store.cutover import domain_mailbox_sources

    rows = domain_mailbox_sources(conn, domain)
    per_pool = Counter(pool_name(system) for _m, _b, system in rows)
    buildings = {(pool_name(system), b) for _m, b, system in rows}
    batches = sum(-(-per_pool[p] // per_task) or 1 for p in POOL_SLOTS)
    closes = sum(len({b for q, b in buildings if q == p}) or 1 for p in POOL_SLOTS)
    return {"final_pass": batches, "reverify": batches, "reverify_close": closes, "final_verify": batches,
            "final_verify_close": closes, "drain": sum(-(-per_pool[p] // max(1, -(-per_pool[p] // drain_tasks))) or 1 for p in POOL_SLOTS)}


#: processes of the direct prestage (scale mode): below the lab sources' limits (20 / 10)
PRESTAGE_PROCS = 6


def _child_env(env: dict) -> None:
    os.environ.update(env)


def _copy_part(dsn: str, ids: list[int]) -> dict:
    from mailshift.copy.copy_one import copy_one
    from mailshift.store import db

    out = Counter()
    conn = db.connect(dsn)
    try:
        for mid in ids:
            r = copy_one(conn, mid, "prestage")
            out["mailboxes"] += 1
            out["copied"] += int(r.copied or 0)
            out["refused"] += int(r.refused or 0)
    finally:
        conn.close()
    return dict(out)


def _verify_building(dsn: str, building_id: str) -> bool:
    from mailshift.store import db
    from mailshift.verify import verify_building

    conn = db.connect(dsn)
    try:
        return bool(verify_building(conn, building_id, kind="pre_cutover", dsn=dsn).proven)
    finally:
        conn.close()


def _prestage_direct(c, ours) -> dict:
    """Scale mode: the prestage and the pre-cutover verification of every building done by the
    test itself in PRESTAGE_PROCS processes - the same `copy_one` and `verify_building` the
    building DAGs run, without Airflow's per-task overhead (501 s through the wave DAGs at 537
    mailboxes) - so that the run's time goes to the cutover, which stays all in Airflow."""
    import multiprocessing

    ids = [m.id for b in ours for m in b.mailboxes]
    env = {k: v for k, v in c["env"].items() if k.startswith(("AIRFLOW_CONN_", "MAILSHIFT_"))}
    t = time.monotonic()
    with multiprocessing.get_context("fork").Pool(PRESTAGE_PROCS, _child_env, (env,)) as pool:
        copied = pool.starmap(_copy_part, [(c["dsn"], ids[i::PRESTAGE_PROCS]) for i in range(PRESTAGE_PROCS)])
        copy_s = time.monotonic() - t
        proven = pool.starmap(_verify_building, [(c["dsn"], b.id) for b in ours])
    total = sum((Counter(x) for x in copied), Counter())
    assert total["mailboxes"] == len(ids) and not total["refused"], total
    assert all(proven), [b.id for b, ok in zip(ours, proven, strict=True) if not ok]
    return {"mailboxes": len(ids), "messages": total["copied"], "copy_s": round(copy_s, 1),
            "verify_s": round(time.monotonic() - t - copy_s, 1), "processes": PRESTAGE_PROCS}


@pytest.mark.slow
@long_only
def test_cutover_on_two_celery_workers(cluster):
    """The whole cutover of lab.mailshift.test as mapped work on both workers: TTL, gate, approval
    (by the assigned approver), final pass, re-verify, swap, a late mail to the OLD server during
    the drain, incremental final proof. Then the run is triggered again: green, approval and
    pre-swap steps skipped, no alert."""
    from lab import slack_standin, zone
    from support.cutover import ORIGINAL_MX, put_plain, restored_zone

    c, af, conn, cfg = cluster, cluster["af"], cluster["conn"], cluster["cfg"]
    domain = cfg.dns_zone
    safe = domain.replace(".", "_")
    ours = [b for b in c["buildings"] if b.domain == domain]
    t = time.monotonic()
    if SCALE:
        c["timings"]["cutover_prestage_direct"] = _prestage_direct(c, ours)
    for w in [] if SCALE else sorted({b.wave for b in ours if any(_ledger(conn, m.id) == [] for m in b.mailboxes)}):
        run = af.trigger(f"mailshift_wave_{w}", {"pass_kind": "prestage", "max_parallel_buildings": 4})
        assert af.wait_for_run(f"mailshift_wave_{w}", run, timeout=7200) == "success", f"wave {w}"
    c["timings"]["cutover_prestage_s"] = round(time.monotonic() - t, 1)
    c["timings"]["cutover_resolved_exceptions"] = _resolve_transient_preflight(conn, domain)
    with restored_zone(cfg):
        zone.reset_mx(cfg, ttl=20)
        run = af.trigger(f"mailshift_lower_ttl_{safe}", {"ttl": 5})
        assert af.wait_for_run(f"mailshift_lower_ttl_{safe}", run, timeout=300) == "success"
        time.sleep(21)   # the old TTL (20 s) has run out everywhere
        slack_standin.reset(cfg)
        dag_id = f"mailshift_cutover_{safe}"
        t = time.monotonic()
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        sampler = ConnectionSampler(cfg, c["workers"]).__enter__()
        run_id = af.trigger(dag_id, {"drain_quiet_seconds": 20, "drain_poll_seconds": 2,
                                     "mailboxes_per_task": CUTOVER_MAILBOXES_PER_TASK,
                                     "drain_tasks_per_source": CUTOVER_DRAIN_TASKS, "final_sample_rate": 0.1})
        af.respond(dag_id, run_id, "approve_mx_swap", "Approve")
        hitl = af.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve_mx_swap/-1/hitlDetails")
        _wait_task(af, dag_id, run_id, "swap_mx", timeout=5400)
        mb = next(m for m in ours[0].mailboxes if m.protocol == "imap")
        legacy = {x.address: x for x in c["inv"].mailboxes}[mb.address]
        server = {s.id: s.lab_server for s in c["inv"].systems}[legacy.source_system]
        late = put_plain(cfg, server, legacy.login, 1, "late-during-drain")
        late_at = time.time()
        state = af.wait_for_run(dag_id, run_id, timeout=7200)
        wall = time.monotonic() - t
        sampler.__exit__(None, None, None)
        facts = _cutover_facts(af, dag_id, run_id, sampler.samples)
        texts = [json.dumps(x["params"], ensure_ascii=False) for x in slack_standin.recorded(cfg, method="chat.postMessage")]
        assert state == "success", {k: v["states"] for k, v in facts.items()}
        expected = _expected_tasks(conn, domain, CUTOVER_MAILBOXES_PER_TASK, CUTOVER_DRAIN_TASKS)
        assert {k: facts[k]["tasks"] for k in expected} == expected   # a task covers a bounded batch
        assert "{'" not in str(hitl.get("body", "")) and "mailboxes" in str(hitl.get("body", "")), hitl.get("body")
        assert [u.get("id") for u in hitl.get("assigned_users") or []] == ["operator"], hitl.get("assigned_users")
        # the late mail: drained (in the ledger, copied) and proven by the final proof
        with conn, conn.cursor() as cur:
            cur.execute("SELECT g.updated_at FROM message g JOIN pass p ON p.id = g.pass_id"
                        " WHERE g.mailbox_id = %s AND p.kind = 'drain' AND g.state = 1", (mb.id,))
            drained = [r[0].timestamp() for r in cur.fetchall()]
        assert len(drained) == len(late) == 1, drained
        from mailshift.verify import proof_state

        assert proof_state(conn, mb.id).state == "proven" and proof_state(conn, mb.id).kind == "final"
        assert any("cutover of" in x and "finished" in x and "guarantee" in x for x in texts), texts
        assert provider_mx(cfg) != [ORIGINAL_MX]
        load = sorted(sampler.load) or [0.0]
        c["runs"]["cutover"] = {"started_at": started_at, "wall_seconds": round(wall, 1),
                                "mailboxes": sum(len(b.mailboxes) for b in ours), "buildings": len(ours),
                                "mailboxes_per_task": CUTOVER_MAILBOXES_PER_TASK, "expected_tasks": expected,
                                "load_average_1m": {"min": load[0], "median": load[len(load) // 2], "max": load[-1]},
                                "connections_max": {srv: max(n.get(srv, 0) for _t, n in sampler.samples)
                                                    for srv in {k for _t, n in sampler.samples for k in n}},
                                "late_mail_delay_s": round(drained[0] - late_at, 1), "steps": facts}
        _record(c)   # the first run's facts even if the re-triggered run does not end
        # re-triggered after the swap: green, silent, approval skipped
        slack_standin.reset(cfg)
        t = time.monotonic()
        again = af.trigger(dag_id, {"drain_quiet_seconds": 4, "drain_poll_seconds": 1, "final_sample_rate": 0.1})
        assert af.wait_for_run(dag_id, again, timeout=3600) == "success"
        c["runs"]["cutover"]["retriggered"] = {"wall_seconds": round(time.monotonic() - t, 1),
                                               "steps": _cutover_facts(af, dag_id, again)}
        states = {(x["task_id"], x["map_index"]): x["state"] for x in _task_instances(af, dag_id, again)}
        assert states[("approve_mx_swap", -1)] == "skipped" and states[("check_ttl", -1)] == "skipped"
        assert states[("record_rejection", -1)] == "skipped" and states[("resume_after_swap", -1)] == "success"
        alerts = [x["params"].get("text", "") for x in slack_standin.recorded(cfg, method="chat.postMessage")]
        assert not [x for x in alerts if "fail" in x.lower() or "approval" in x.lower()], alerts
    print(json.dumps(c["runs"]["cutover"], indent=1, default=str))


def _resolve_transient_preflight(conn, domain: str) -> int:
    """What the operator does before the cutover: preflight exceptions (a login refused or the
    server busy while several buildings preflighted at once) of mailboxes that were copied and
    proven since are resolved, by name. Anything else stays open and blocks the gate."""
    from mailshift.store.exception_records import resolve_if_open
    from mailshift.verify import proof_state

    with conn, conn.cursor() as cur:
        cur.execute("SELECT e.dedup_key, e.mailbox_id FROM exception e JOIN mailbox_scope s ON s.mailbox_id = e.mailbox_id"
                    " WHERE s.domain = %s AND e.status IN ('open', 'acknowledged') AND e.kind LIKE 'preflight_%%'",
                    (domain,))
        rows = cur.fetchall()
    done = 0
    for key, mid in rows:
        if proof_state(conn, mid).state == "proven":
            done += resolve_if_open(conn, key, "operator (distributed test)", "copied and proven since the preflight")
    return done


def provider_mx(cfg) -> list[str]:
    from lab.zone import current_mx

    return current_mx(cfg)[0]


def _wait_task(af, dag_id, run_id, task_id, timeout=1800):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = af.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        if ti["state"] == "success":
            return
        if ti["state"] in ("failed", "upstream_failed", "skipped"):
            raise AssertionError(f"{task_id}: {ti['state']}")
        time.sleep(2)
    raise TimeoutError(task_id)
