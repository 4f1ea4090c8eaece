"""Issue #16: `make test` must not leave queued DAG runs in the lab's Airflow metadata DB (they ran
at the next `make airflow`). The cleanup of conftest.py finds a run a test triggered and never
ran (what the UI test's `ui_test_run` was) and a DAG a test defined for itself, removes them,
and then finds nothing."""

from __future__ import annotations

import os
import uuid

import pytest

from lab.airflow_home import airflow_env

pytestmark = pytest.mark.integration


def test_cleanup_removes_what_a_test_leaves_for_the_scheduler(lab_config):
    from airflow.models.dagrun import DagRun
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, timezone
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from e2e.conftest import TEST_DAG_PREFIX, _high_water, leftovers, register_test_dag, remove_leftovers

    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") != airflow_env(lab_config)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        pytest.fail("Airflow is not configured for the lab: source .lab/airflow.env (make test does)")
    mark = _high_water()
    dag_id = f"{TEST_DAG_PREFIX}leftover_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id=dag_id, schedule=None) as dag:
        EmptyOperator(task_id="nothing")
    register_test_dag(dag)
    assert dag.test().state == "success"          # puts the DAG into the metadata DB, run finished
    with create_session() as session:   # a triggered run no scheduler has picked up yet (as `ui_test_run` was)
        session.add(DagRun(dag_id, "left_queued", state="queued", run_type=DagRunType.MANUAL,
                           run_after=timezone.utcnow(), triggered_by=DagRunTriggeredByType.TEST, conf={}))

    found = leftovers(mark)
    assert found["runs"] == [(dag_id, "left_queued", "queued")]
    assert dag_id in found["test_dags"]
    remove_leftovers(mark)
    assert leftovers(mark) == {"runs": [], "asset_triggers": [], "test_dags": []}
