"""Airflow for the lab: its metadata database in the lab's PostgreSQL, and the environment
(AIRFLOW_HOME, DAG and plugin folders, connections) every lab run of Airflow shares.

`python -m lab.airflow_home` creates the `airflow` database if needed, runs `airflow db
migrate`, and prints `export ...` lines for a shell.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import yaml

from .config import LabConfig
from .connections import airflow_conn_env

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_DB = os.environ.get("MAILSHIFT_AIRFLOW_DB", "airflow")  # one metadata DB per concurrent Airflow


def metadata_url(cfg: LabConfig, name: str | None = None) -> str:
    parts = urlsplit(cfg.pg_dsn)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2", path="/" + (name or AIRFLOW_DB)))


API_PORT_OFFSET = 81
UI_USERS = {"operator": "admin", "support": "viewer"}


def api_port(cfg: LabConfig) -> int:
    return int(os.environ.get("MAILSHIFT_AIRFLOW_API_PORT") or cfg.port_base + API_PORT_OFFSET)


def _secrets(home: Path) -> dict:
    """Lab-only Airflow secrets (JWT, API secret key, UI passwords), generated once per lab."""
    path = home / "lab-secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    home.mkdir(parents=True, exist_ok=True)
    doc = {"jwt_secret": secrets.token_urlsafe(32), "secret_key": secrets.token_urlsafe(32),
           "passwords": {user: secrets.token_urlsafe(12) for user in UI_USERS}}
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    (home / "passwords.json").write_text(json.dumps(doc["passwords"]))
    (home / "passwords.json").chmod(0o600)
    return doc


def ui_password(cfg: LabConfig, user: str) -> str:
    return _secrets(Path(cfg.root) / "airflow")["passwords"][user]


def airflow_env(cfg: LabConfig, db_name: str | None = None) -> dict[str, str]:
    """Everything an Airflow process of the lab needs in its environment."""
    db_name = db_name or AIRFLOW_DB
    home = Path(cfg.root) / ("airflow" if db_name == "airflow" else f"airflow-{db_name}")
    sec = _secrets(Path(cfg.root) / "airflow")
    api = f"http://127.0.0.1:{api_port(cfg)}"
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url(cfg, db_name),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": sec["secret_key"],
        # the root of every link an alert carries (Airflow runs and task logs, and the mailshift
        # pages under <base>/mailshift): real http links in the lab, never a path on a worker.
        # MAILSHIFT_UI_BASE_URL is left unset on purpose: the pages' links then follow this URL in
        # every lab environment that overrides it (the Celery lab's API on another port).
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in UI_USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(Path(cfg.root) / "airflow" / "passwords.json"),
        # who may approve an MX swap (HITL assigned users): the lab's operator account
        "AIRFLOW__MAILSHIFT__CUTOVER_APPROVERS": "operator:operator",
        "MAILSHIFT_SNAPSHOT_DIR": os.environ.get("MAILSHIFT_SNAPSHOT_DIR", str(Path(cfg.root) / "snapshot")),
        "MAILSHIFT_DB_URL": cfg.pg_dsn,
        "MAILSHIFT_REPORTS_DIR": os.environ.get("MAILSHIFT_REPORTS_DIR", str(Path(cfg.root) / "reports")),
        "PYTHONPATH": str(REPO / "include"),
    }
    env.update(airflow_conn_env(cfg))
    return env


def ensure_metadata_db(cfg: LabConfig, db_name: str | None = None, fresh: bool = False) -> dict[str, str]:
    """Create (or, fresh=True, recreate) an Airflow metadata database owned by the lab's mailshift
    role, migrate it and load the pools; returns the Airflow environment that uses it."""
    db_name = db_name or AIRFLOW_DB
    admin = psycopg2.connect(cfg.pg_admin_dsn)
    admin.autocommit = True
    user = urlsplit(cfg.pg_dsn).username
    with admin.cursor() as cur:
        if fresh:
            cur.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE DATABASE {db_name} OWNER {user}")
    admin.close()
    af_env = airflow_env(cfg, db_name)
    env = {**os.environ, **af_env}
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    _run([airflow, "db", "migrate"], env)
    # The pools of airflow_settings.yaml (what `astro dev start` would create), or copy tasks
    # naming a missing pool would wait forever.
    pools = {p["pool_name"]: {"slots": p["pool_slot"], "description": p.get("pool_description", "")}
             for p in yaml.safe_load((REPO / "airflow_settings.yaml").read_text())["airflow"]["pools"]}
    path = Path(env["AIRFLOW_HOME"]) / "pools.json"
    path.write_text(json.dumps(pools))
    _run([airflow, "pools", "import", str(path)], env)
    return af_env


def _run(argv: list[str], env: dict) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def main() -> None:
    cfg = LabConfig.load()
    ensure_metadata_db(cfg)
    for key, value in airflow_env(cfg).items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
