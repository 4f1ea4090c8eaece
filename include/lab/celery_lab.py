"""Airflow on the CeleryExecutor in the lab: Redis broker, PostgreSQL metadata DB + result backend,
Celery workers with their own queues, and a way to kill one (SIGKILL) to prove the retry path.

    cfg = LabConfig.load()
    env = celery_airflow_env(cfg)              # CeleryExecutor env on top of lab.airflow_home's
    ensure_metadata_db(cfg, env)               # CREATE DATABASE + `airflow db migrate`
    with RedisServer(cfg) as redis, CeleryWorkers(cfg, env) as workers:
        workers.start("w1", ["src_src_a", "src_src_b"], concurrency=4)
        workers.start("w2", ["default", "src_src_a", "src_src_b"], concurrency=6)
        with AirflowServices(cfg, env, log_dir=...) as af: ...
        workers.kill("w1")                     # SIGKILL the worker and every descendant

`python -m lab.celery_lab env` prints the exports; `up` / `down` start and stop Redis + two
workers for manual runs (state under `.lab/celery-<db>/`, pids in `run/`).

Everything is a child process group of ours (or recorded in a pidfile) and is stopped on exit.
Several Airflows share the lab (the demo's on the `airflow` metadata DB): this one uses its own
metadata DB (`MAILSHIFT_AIRFLOW_DB`, default `airflow_celery`), API port
(`MAILSHIFT_AIRFLOW_API_PORT`, default base+95), Redis port (`MAILSHIFT_REDIS_PORT`, default
base+79), AIRFLOW_HOME and log-server ports.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

from .airflow_home import airflow_env
from .config import LabConfig

DEFAULT_DB = "airflow_celery"
REDIS_PORT_OFFSET = 79
API_PORT_OFFSET = 95
TRIGGER_LOG_PORT_OFFSET = 96
WORKER_ENV = "MAILSHIFT_CELERY_WORKER"
#: the lab's layout: w1 only copies (source-system queues), w2 also runs everything else
LAB_WORKERS = (("w1", ("src_src_a", "src_src_b"), 4), ("w2", ("default", "src_src_a", "src_src_b"), 6))


def worker_hostname() -> str:
    """`[core] hostname_callable` of the lab's workers: the worker's name, so a task instance's
    `hostname` tells which of two workers on one machine ran it (production: the FQDN)."""
    return os.environ.get(WORKER_ENV) or socket.getfqdn()


def metadata_db() -> str:
    db = os.environ.get("MAILSHIFT_AIRFLOW_DB") or DEFAULT_DB
    return DEFAULT_DB if db == "airflow" else db  # never the demo's metadata DB


def redis_port(cfg: LabConfig) -> int:
    return int(os.environ.get("MAILSHIFT_REDIS_PORT") or cfg.port_base + REDIS_PORT_OFFSET)


def api_port(cfg: LabConfig) -> int:
    return int(os.environ.get("MAILSHIFT_AIRFLOW_API_PORT") or cfg.port_base + API_PORT_OFFSET)


def _db_url(cfg: LabConfig, db: str, scheme: str) -> str:
    parts = urlsplit(cfg.pg_dsn)
    return urlunsplit(parts._replace(scheme=scheme, path="/" + db))


def state_dir(cfg: LabConfig, db: str | None = None) -> Path:
    return Path(cfg.root) / f"celery-{db or metadata_db()}"


def celery_airflow_env(cfg: LabConfig, *, db: str | None = None, port: int | None = None,
                       redis: int | None = None, heartbeat_timeout: int = 45) -> dict[str, str]:
    """The lab's Airflow environment switched to the CeleryExecutor.

    Broker: the lab's Redis (`redis://127.0.0.1:<base+79>/0`); metadata DB and Celery result
    backend: the lab PostgreSQL (`db+postgresql+psycopg2://.../<db>`, Celery creates its
    `celery_taskmeta` tables there). `heartbeat_timeout`: how long a task instance may go without
    a heartbeat before the scheduler fails it (and retries it elsewhere) - the time a killed
    worker's tasks stay "running". Airflow's default is 300 s; the lab uses 45 s.
    """
    db = db or metadata_db()
    port = port or api_port(cfg)
    redis = redis or redis_port(cfg)
    env = airflow_env(cfg)
    api = f"http://127.0.0.1:{port}"
    meta = _db_url(cfg, db, "postgresql+psycopg2")
    env.update({
        "AIRFLOW_HOME": str(state_dir(cfg, db) / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",  # a busy worker does not hoard tasks
        "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
        # a copy task is far shorter than this; a lost worker's tasks are retried by the scheduler
        # (heartbeat timeout), not by broker redelivery
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        # task -> execution API calls: the lab's 2 cores are shared by several Airflows; the 5 s
        # default timed out under load (a task failed its start with httpx.ReadTimeout)
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg.port_base + TRIGGER_LOG_PORT_OFFSET),
        "MAILSHIFT_AIRFLOW_DB": db,
        "MAILSHIFT_AIRFLOW_API_PORT": str(port),
        "MAILSHIFT_REDIS_PORT": str(redis),
    })
    return env


def ensure_metadata_db(cfg: LabConfig, env: dict[str, str], fresh: bool = False) -> None:
    """Create the metadata database named in `env` (owned by the lab's mailshift role), migrate it.
    `fresh`: drop it first (never the demo's `airflow` database), so runs of a test start clean."""
    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).path.lstrip("/")
    admin = psycopg2.connect(cfg.pg_admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        if fresh and db != "airflow":
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{db}" OWNER {urlsplit(cfg.pg_dsn).username}')
    admin.close()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run([airflow, "db", "migrate"], env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_tree(pid: int, sig: int) -> list[int]:
    """Signal a process group, then every descendant (task processes run in their own groups)."""
    pids = _descendants(pid)
    for fn, target in [(os.killpg, pid)] + [(os.kill, p) for p in pids]:
        try:
            fn(target, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return [pid, *pids]


class RedisServer:
    """Debian's redis-server on 127.0.0.1:<port>, no persistence, data dir under `.lab/`."""

    def __init__(self, cfg: LabConfig, port: int | None = None, directory: Path | None = None):
        self.port = port or redis_port(cfg)
        self.dir = Path(directory or Path(cfg.root) / f"redis-{self.port}")
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 20) -> None:
        if self.ping():
            raise RuntimeError(f"something already answers on redis port {self.port}: not ours, not touched")
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
             "--dir", str(self.dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--pidfile", str(self.dir / "redis.pid")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.dir}/redis.log")
            if self.ping():
                return
            time.sleep(0.2)
        raise TimeoutError(f"redis-server not answering on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class CeleryWorkers:
    """`airflow celery worker` processes, one process group each, named w1, w2, ..."""

    def __init__(self, cfg: LabConfig, env: dict[str, str], log_dir: Path | None = None):
        self.cfg = cfg
        self.env = {**os.environ, **env}
        self.log_dir = Path(log_dir or Path(env["AIRFLOW_HOME"]) / "logs-workers")
        self.procs: dict[str, subprocess.Popen] = {}
        self.queues: dict[str, tuple[str, ...]] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, name: str, queues, concurrency: int = 4, wait: float = 90) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).with_name("airflow"))
        env = {**self.env, WORKER_ENV: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": "lab.celery_lab.worker_hostname"}
        argv = [airflow, "celery", "worker", "--queues", ",".join(queues), "--concurrency", str(concurrency),
                "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
        log_path = self.log_dir / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        log = open(log_path, "ab")
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name], self.queues[name] = p, tuple(queues)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:  # "ready." once connected to the broker and consuming
            if p.poll() is not None:
                raise RuntimeError(f"celery worker {name} exited with {p.returncode}; see {log_path}")
            with open(log_path, "rb") as f:
                f.seek(offset)
                if b" ready." in f.read():
                    return p
            time.sleep(0.5)
        raise TimeoutError(f"celery worker {name} not ready after {wait}s; see {log_path}")

    def pids(self, name: str) -> list[int]:
        p = self.procs[name]
        return [p.pid, *_descendants(p.pid)]

    def kill(self, name: str) -> list[int]:
        """SIGKILL the worker, its pool processes and every task process under it (a lost node)."""
        p = self.procs[name]
        killed = _kill_tree(p.pid, signal.SIGKILL)
        p.wait()
        return killed

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                _kill_tree(p.pid, signal.SIGTERM)  # warm shutdown
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            _kill_tree(p.pid, signal.SIGKILL)  # and whatever is left under it
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()


# -- manual runs: python -m lab.celery_lab env | up | down -------------------------------------
def _pidfile(cfg: LabConfig, name: str) -> Path:
    return state_dir(cfg) / "run" / f"{name}.pid"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    cmd = args[0] if args else "env"
    cfg = LabConfig.load()
    env = celery_airflow_env(cfg)
    if cmd == "env":
        for k, v in env.items():
            print(f"export {k}={shlex.quote(v)}")
        return 0
    if cmd == "up":
        ensure_metadata_db(cfg, env)
        (state_dir(cfg) / "run").mkdir(parents=True, exist_ok=True)
        redis = RedisServer(cfg)
        redis.start()
        _pidfile(cfg, "redis").write_text(str(redis.proc.pid))
        workers = CeleryWorkers(cfg, env)
        for name, queues, conc in LAB_WORKERS:
            p = workers.start(name, queues, conc)
            _pidfile(cfg, name).write_text(str(p.pid))
            print(f"celery worker {name}: queues {','.join(queues)}, concurrency {conc}, pid {p.pid}")
        print(f"redis on 127.0.0.1:{redis.port}, pid {redis.proc.pid}; stop with `python -m lab.celery_lab down`")
        return 0
    if cmd == "down":
        for name in [w[0] for w in LAB_WORKERS] + ["redis"]:
            pf = _pidfile(cfg, name)
            if pf.exists():
                pid = int(pf.read_text())
                _kill_tree(pid, signal.SIGTERM)
                time.sleep(2)
                _kill_tree(pid, signal.SIGKILL)
                pf.unlink()
                print(f"stopped {name} (pid {pid})")
        return 0
    print("usage: python -m lab.celery_lab env|up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
