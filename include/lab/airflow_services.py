"""Run a real Airflow for the lab: scheduler, dag-processor and api-server, as child processes.

Used by the end-to-end tests and `make demo`: `with AirflowServices(cfg, env) as af: ...`
starts the three, waits for the API server, and stops every process (whole process groups)
on exit, so nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .airflow_home import api_port, ui_password
from .config import LabConfig

COMPONENTS = (("api-server", ["api-server", "--host", "127.0.0.1"]), ("scheduler", ["scheduler"]),
              ("dag-processor", ["dag-processor"]), ("triggerer", ["triggerer"]))


def listen_port(cfg: LabConfig, env: dict[str, str]) -> int:
    """The API server's port: the one the environment's execution API URL names (what the task
    runners - LocalExecutor children or Celery workers - call), so the two can never disagree.
    The Celery lab's environment says base+95, the demo's base+81; only an environment without
    the URL falls back to `api_port` (MAILSHIFT_AIRFLOW_API_PORT of *that* environment first)."""
    from urllib.parse import urlsplit

    for key in ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API__BASE_URL"):
        if env.get(key) and urlsplit(env[key]).port:
            return int(urlsplit(env[key]).port)
    if env.get("MAILSHIFT_AIRFLOW_API_PORT"):
        return int(env["MAILSHIFT_AIRFLOW_API_PORT"])
    return api_port(cfg)


class AirflowServices:
    def __init__(self, cfg: LabConfig, env: dict[str, str], log_dir: Path | None = None):
        self.cfg = cfg
        self.env = {**os.environ, **env}
        self.port = listen_port(cfg, self.env)
        self.log_dir = Path(log_dir or Path(cfg.root) / "airflow" / "logs-services")
        self.procs: dict[str, subprocess.Popen] = {}
        self.base = f"http://127.0.0.1:{self.port}"
        self._token = None

    def __enter__(self):
        # A SIGTERM (Ctrl-C, `kill`) of the caller must still stop the whole Airflow.
        self._previous = signal.signal(signal.SIGTERM, self._terminate)
        self.start()
        return self

    @staticmethod
    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        self.stop()
        signal.signal(signal.SIGTERM, self._previous)

    def start(self, timeout: float = 120) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).with_name("airflow"))
        for name, args in COMPONENTS:
            argv = [airflow, *args] + (["--port", str(self.port)] if name == "api-server" else [])
            log = open(self.log_dir / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {p.returncode}; see {self.log_dir}/{name}.log")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=2):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"Airflow API server not up on {self.base} after {timeout}s")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for p in self.procs.values():  # children the component forked (executor workers)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs.clear()

    # -- REST API, as an operator's tools use it ------------------------------------------
    def token(self, user: str = "operator") -> str:
        if self._token is None:
            body = json.dumps({"username": user, "password": ui_password(self.cfg, user)}).encode()
            req = urllib.request.Request(f"{self.base}/auth/token", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.loads(r.read())["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}/api/v2{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.token()}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            exc.msg = f"{exc.msg}: {method} {path}: {exc.read()[:500].decode('utf-8', 'replace')}"
            raise
        return json.loads(raw) if raw else {}

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/dags/{dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout}s")

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def respond(self, dag_id: str, run_id: str, task_id: str, option: str, timeout: float = 900) -> dict:
        """Answer a human-in-the-loop task (e.g. "Approve") as an operator would, and make sure the
        answer took: Airflow 3.3 resumes only a task that is parked, so we answer once the task
        has been parked a few seconds, and answer again if a retry asks anew."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
        deadline = time.monotonic() + timeout
        answered, parked_since, response = set(), {}, {}
        while time.monotonic() < deadline:
            ti = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            state, attempt = ti["state"], ti["try_number"]
            if state in ("success", "skipped"):
                return response
            if state in ("failed", "upstream_failed"):
                raise RuntimeError(f"{dag_id}.{task_id} ended {state} before the answer took")
            if state == "awaiting_input" and attempt not in answered:
                parked_since.setdefault(attempt, time.monotonic())
                if time.monotonic() - parked_since[attempt] >= 5:
                    try:
                        response = self.api("PATCH", path, {"chosen_options": [option], "params_input": {}})
                    except urllib.error.HTTPError as exc:
                        if exc.code != 409:  # 409: this attempt was answered already
                            raise
                    answered.add(attempt)
            time.sleep(2)
        raise TimeoutError(f"{task_id} of {dag_id}: the answer did not take within {timeout}s")

    def task_states(self, dag_id: str, run_id: str) -> dict:
        """Every task instance's state, page by page: the API caps `limit` at
        `[api] maximum_page_limit` (100), so one page of a mapped run is not the whole run."""
        tis, total = [], None
        while total is None or len(tis) < total:
            page = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100&offset={len(tis)}")
            total = page["total_entries"]
            if not page["task_instances"]:
                break
            tis += page["task_instances"]
        return {(t["task_id"], t["map_index"]): t["state"] for t in tis}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout}s")


def main() -> None:
    """`make airflow`: run the lab's Airflow in the foreground until Ctrl-C."""
    from .airflow_home import ensure_metadata_db

    cfg = LabConfig.load()
    with AirflowServices(cfg, ensure_metadata_db(cfg)) as af:
        print(f"Airflow UI: {af.base}  (users: operator / support; passwords in {cfg.root}/airflow/passwords.json)")
        try:
            while all(p.poll() is None for p in af.procs.values()):
                time.sleep(2)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
