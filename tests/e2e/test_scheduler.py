"""The pilot wave through a real Airflow: api-server, scheduler, dag-processor and triggerer
started by the test, the lab's PostgreSQL as metadata database. The wave DAG starts its
building DAG, the building is migrated and proven, and Slack hears the wave start and finish."""

from __future__ import annotations

import psycopg2
import pytest

from lab import slack_standin
from lab.airflow_home import ensure_metadata_db
from lab.airflow_services import AirflowServices
from mailshift.planning import snapshot as snap

pytestmark = pytest.mark.integration


def test_pilot_wave_runs_on_the_scheduler(e2e):
    cfg = e2e["cfg"]
    pilot = [b for b in snap.load_all(e2e["snapshot_dir"]) if b.wave == 1]
    assert pilot, "the plan has a pilot wave"
    slack_standin.reset(cfg)
    # Its own, fresh metadata database: runs of the demo or an earlier test never get in the way.
    env = {**e2e["env"], **{k: v for k, v in ensure_metadata_db(cfg, "airflow_e2e", fresh=True).items()
                            if k.startswith("AIRFLOW__") or k == "AIRFLOW_HOME"}}
    with AirflowServices(cfg, env, log_dir=e2e["root"] / "airflow-logs") as af:
        af.wait_for_dag("mailshift_wave_1")
        for b in pilot:
            af.wait_for_dag(f"mailshift_building_{b.id}")
            af.api("PATCH", f"/dags/mailshift_building_{b.id}", {"is_paused": False})
        run = af.trigger("mailshift_wave_1", {"pass_kind": "prestage"})
        state = af.wait_for_run("mailshift_wave_1", run, timeout=900)
        tasks = af.task_states("mailshift_wave_1", run)
        building_runs = {b.id: af.api("GET", f"/dags/mailshift_building_{b.id}/dagRuns")["dag_runs"] for b in pilot}
    assert state == "success", tasks
    for b, runs in building_runs.items():
        assert [r["state"] for r in runs if r["dag_run_id"] == run] == ["success"], (b, runs)

    from mailshift.verify import proof_state

    conn = psycopg2.connect(e2e["dsn"])
    for b in pilot:
        for m in b.mailboxes:
            assert proof_state(conn, m.id).state in ("proven", "waived"), m.address
    conn.close()
    texts = [c["params"].get("text", "") for c in slack_standin.recorded(cfg, method="chat.postMessage")]
    assert any("wave 1 started" in t for t in texts), texts
    assert any("wave 1 finished" in t and f"{len(pilot)}/{len(pilot)} buildings proven" in t for t in texts), texts
