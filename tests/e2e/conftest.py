"""End-to-end fixtures: a lab inventory loaded into a fresh database, planned into a snapshot,
and the Airflow environment (metadata DB in the lab's PostgreSQL, connections) pointing at it.

The lab's Airflow metadata database is also the one `make airflow` starts on, so the tests must
not leave work in it: a DAG run that a test created and never finished (the UI test triggers a
run with no scheduler running; a `dag.test()` interrupted mid-run stays `running`) or an Asset
trigger queued by a building that `dag.test()` proved would run at the next start. The session
fixture `no_work_left_for_the_next_airflow` removes them, and the DAGs tests define for
themselves (`mailshift_test_*`), and then checks that none remain.
"""

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

TEST_DAG_PREFIX = "mailshift_test_"     # DAGs a test defines for itself (not in dags/)


def register_test_dag(dag) -> None:
    """Write a DAG a test defined for itself into the metadata DB (as the dag-processor would),
    so `dag.test()` can create its run: Airflow 3.3's `dag.test()` only finds DAGs of a bundle.
    Its id must start with TEST_DAG_PREFIX (the session cleanup deletes those DAGs)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    assert dag.dag_id.startswith(TEST_DAG_PREFIX), dag.dag_id
    with create_session() as session:
        # a fresh metadata DB has no bundle row until something syncs them (the dag-processor,
        # or the first dag.test() of a bundle DAG), and the DAG row refers to it: commit it first
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(),
                                         session=session, files_parsed=set())


def _metadata_configured() -> bool:
    from lab.airflow_home import airflow_env
    from lab.config import LabConfig

    try:
        wanted = airflow_env(LabConfig.load())["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    except Exception:  # noqa: BLE001 - no lab: nothing of ours can be in a metadata DB
        return False
    return os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == wanted


def _high_water():
    """(largest dag_run id, the metadata DB's now) before the tests."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return (session.scalar(select(func.max(DagRun.id))) or 0, session.scalar(select(func.now())))


def leftovers(mark) -> dict:
    """What the tests since `mark` left for the next scheduler: unfinished runs they created,
    Asset triggers they queued, DAGs they defined for themselves."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    top, since = mark
    with create_session() as session:
        runs = session.execute(select(DagRun.dag_id, DagRun.run_id, DagRun.state).where(
            DagRun.id > top, DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))).all()
        queued = session.execute(select(AssetDagRunQueue.target_dag_id, AssetDagRunQueue.asset_id).where(
            AssetDagRunQueue.created_at >= since)).all()
        dags = session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.startswith(TEST_DAG_PREFIX))).all()
    return {"runs": [tuple(r) for r in runs], "asset_triggers": [tuple(q) for q in queued], "test_dags": list(dags)}


def remove_leftovers(mark) -> dict:
    """Delete what `leftovers` finds (runs with their task instances, by Airflow's own models)."""
    from airflow.api.common.delete_dag import delete_dag
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import delete, select

    found = leftovers(mark)
    top, since = mark
    with create_session() as session:
        for run in session.scalars(select(DagRun).where(
                DagRun.id > top, DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))).all():
            session.delete(run)
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.created_at >= since))
    for dag_id in found["test_dags"]:
        delete_dag(dag_id)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_work_left_for_the_next_airflow():
    """Clean the lab's metadata DB of what the e2e tests leave behind; fail if anything remains."""
    if not _metadata_configured():
        yield
        return
    mark = _high_water()
    yield
    removed = remove_leftovers(mark)
    if any(removed.values()):
        print(f"\nremoved from the lab's Airflow metadata DB: {removed}")
    assert leftovers(mark) == {"runs": [], "asset_triggers": [], "test_dags": []}


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
