"""End-to-end fixtures: a lab inventory loaded into a fresh database, planned into a snapshot,
and the Airflow environment (metadata DB in the lab's PostgreSQL, connections) pointing at it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from lab import corpus
from lab.airflow_home import airflow_env
from lab.seed import seed_lab
from mailshift.inventory.load import load_inventory
from support.mail import fresh_database


def plan_snapshot(dsn: str, snapshot_dir: Path) -> None:
    """`mailshift plan` as an operator runs it: pilot wave of one building, snapshot written."""
    from mailshift.cli import main

    assert main(["--db", dsn, "plan", "--pilot-buildings", "1", "--start", "2027-01-11",
                 "--snapshot-dir", str(snapshot_dir), "--brief"]) == 0


@pytest.fixture(scope="session")
def e2e(lab_config, tmp_path_factory):
    """{cfg, dsn, inventory, snapshot_dir, env}: the test-profile inventory, seeded and planned."""
    cfg = lab_config
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") != airflow_env(cfg)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        pytest.fail("Airflow is not configured for the lab: run `make test`, or "
                    "`eval \"$(.venv/bin/python -m lab.airflow_home)\"` before pytest")
    root = tmp_path_factory.mktemp("e2e")
    inv = corpus.generate_inventory(42, "test")
    exports = corpus.write_exports(inv, root / "exports", cfg)
    with fresh_database(cfg) as dsn:
        conn = psycopg2.connect(dsn)
        load_inventory(conn, exports)
        conn.close()
        seed_lab(cfg, inv)
        snap = root / "snapshot"
        plan_snapshot(dsn, snap)
        env = airflow_env(cfg)
        db = urlsplit(dsn)
        env["AIRFLOW_CONN_MAILSHIFT_DB"] = json.dumps(
            {"conn_type": "postgres", "host": db.hostname, "port": db.port, "login": db.username,
             "password": db.password, "schema": db.path.lstrip("/")})
        env["MAILSHIFT_SNAPSHOT_DIR"] = str(snap)
        env["MAILSHIFT_REPORTS_DIR"] = str(root / "reports")
        env["MAILSHIFT_DB_URL"] = dsn
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            yield {"cfg": cfg, "dsn": dsn, "inventory": inv, "snapshot_dir": snap, "env": env, "root": root}
        finally:
            os.environ.clear()
            os.environ.update(saved)
