"""Every DAG file imports cleanly against a snapshot, and every task is operable: an owner,
retries, and only pools that airflow_settings.yaml defines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mailshift.planning import snapshot

REPO = Path(__file__).resolve().parents[2]


def _buildings():
    systems = ["src-a", "src-b"]
    out = []
    for i in range(40):
        system = systems[i % 2]
        mailboxes = tuple(snapshot.SnapshotMailbox(i * 10 + j, f"user{i}-{j}@lab.mailshift.test", "imap")
                          for j in range(1 + i % 7))
        out.append(snapshot.SnapshotBuilding(f"B{i:04d}", f"Building {i}", "lab.mailshift.test", system,
                                             snapshot.pool_name(system), 1 + i % 3, None, mailboxes))
    return out


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    snap = tmp_path_factory.mktemp("snapshot")
    waves = [{"number": n, "name": f"wave {n}", "kind": "pilot" if n == 1 else "regular",
              "start_date": f"2027-01-0{n}"} for n in (1, 2, 3)]
    snapshot.write_snapshot(snap, _buildings(), plan_id=1, plan_hash="0" * 64, waves=waves, shards=16)
    mp = pytest.MonkeyPatch()
    mp.setenv("MAILSHIFT_SNAPSHOT_DIR", str(snap))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    yield bag
    mp.undo()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_dag_per_building_and_wave(dagbag):
    ids = set(dagbag.dag_ids)
    assert {f"mailshift_building_B{i:04d}" for i in range(40)} <= ids
    assert {"mailshift_wave_1", "mailshift_wave_2", "mailshift_wave_3"} <= ids


def test_every_task_has_owner_and_retries(dagbag):
    for dag in dagbag.dags.values():
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag.dag_id}.{t.task_id} has no owner"
            assert t.retries and t.retries >= 1, f"{dag.dag_id}.{t.task_id} has no retries"


def test_every_pool_exists_in_airflow_settings(dagbag):
    settings = yaml.safe_load((REPO / "airflow_settings.yaml").read_text())
    pools = {p["pool_name"] for p in settings["airflow"]["pools"]} | {"default_pool"}
    used = {(dag.dag_id, t.task_id, t.pool) for dag in dagbag.dags.values() for t in dag.tasks}
    missing = sorted(u for u in used if u[2] not in pools)
    assert not missing, f"tasks name pools missing from airflow_settings.yaml: {missing[:5]}"


def test_copy_tasks_run_in_their_source_systems_pool(dagbag):
    dag = dagbag.dags["mailshift_building_B0001"]
    assert dag.get_task("copy").pool == "src_src_b"
    assert dagbag.dags["mailshift_building_B0000"].get_task("copy").pool == "src_src_a"


def test_no_snapshot_means_no_building_dags(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILSHIFT_SNAPSHOT_DIR", str(tmp_path / "none"))
    from mailshift.airflow.factory import building_dags

    assert building_dags(shard=0) == {}


def test_building_dags_take_the_pass_from_the_run_conf(dagbag):
    """No Param on building DAGs (serialisation cost); the pass comes from conf and is checked."""
    from airflow.sdk.exceptions import AirflowFailException

    from mailshift.airflow.building import requested_pass
    assert not dagbag.dags["mailshift_building_B0001"].params
    assert requested_pass(None) == "prestage"
    assert requested_pass({"pass_kind": "delta"}) == "delta"
    with pytest.raises(AirflowFailException, match="pass_kind='deltaa'"):
        requested_pass({"pass_kind": "deltaa"})


def test_wave_dags_offer_every_pass_kind(dagbag):
    from mailshift.rules.states import PASS_KINDS

    param = dagbag.dags["mailshift_wave_1"].params.get_param("pass_kind")
    assert param.value == "prestage" and param.schema["enum"] == list(PASS_KINDS)


def test_copy_queue_is_the_pool_unless_configured(monkeypatch):
    from mailshift.airflow.building import copy_queue

    building = _buildings()[1]
    monkeypatch.delenv("MAILSHIFT_COPY_QUEUE", raising=False)
    assert copy_queue(building) == "src_src_b"
    monkeypatch.setenv("MAILSHIFT_COPY_QUEUE", "default")
    assert copy_queue(building) == "default"


def test_a_shard_over_its_budget_fails_loudly(tmp_path, monkeypatch):
    """The check projects build time to the whole parse: a tiny budget refuses the shard."""
    from mailshift.airflow import factory

    snapshot.write_snapshot(tmp_path, _buildings(), plan_id=1, plan_hash="0" * 64, waves=[], shards=1)
    monkeypatch.setattr(factory, "SHARD_BUDGET_SECONDS", 1e-6)
    with pytest.raises(factory.ShardOverBudget, match=r"with serialisation \(budget"):
        factory.building_dags(shard=0, directory=tmp_path)
    monkeypatch.setattr(factory, "SHARD_BUDGET_SECONDS", 1000.0)
    assert len(factory.building_dags(shard=0, directory=tmp_path)) == 40
    assert factory.projected_parse_seconds(1.0, build_share=0.25) == 4.0


def test_cutover_files_deal_every_domain_exactly_once(tmp_path):
    from mailshift.airflow.cutover import CUTOVER_FILES, cutover_dags

    buildings = _buildings()
    for i, b in enumerate(buildings):
        b.domain = f"d{i % 7}.example.jp"
    snapshot.write_snapshot(tmp_path, buildings, plan_id=1, plan_hash="0" * 64, waves=[], shards=2)
    seen = [dag_id for part in range(CUTOVER_FILES)
            for dag_id in cutover_dags(tmp_path, part=part, parts=CUTOVER_FILES)]
    expected = {f"mailshift_{kind}_d{i}_example_jp" for i in range(7) for kind in ("cutover", "lower_ttl")}
    assert sorted(seen) == sorted(expected)
    assert len(list((REPO / "dags").glob("mailshift_cutover_*.py"))) == CUTOVER_FILES


def test_cutover_steps_fail_deliberate_errors_without_retry(lab_config):
    """A cutover step that meets an identity mismatch or a refused login fails at once (no retry
    locks the account or repeats the mismatch); a transient failure keeps Airflow's retries. The
    step runs on the glue's real database connection, closed whichever way it ends."""
    import psycopg2
    import pytest

    from mailshift.airflow import cutover
    from mailshift.airflow.failfast import NotRetried
    from mailshift.errors import AuthError, IdentityMismatch, TransientError

    seen = []

    def step(conn, exc):
        seen.append(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        raise exc

    for exc in (IdentityMismatch("session is c2, not c1"), AuthError("login refused")):
        with pytest.raises(NotRetried):
            cutover._run(step, exc)
    with pytest.raises(TransientError):
        cutover._run(step, TransientError("127.0.0.1:143: connection refused"))
    with pytest.raises(psycopg2.OperationalError):
        cutover._run(step, psycopg2.OperationalError("database down"))
    assert len(seen) == 4 and all(c.closed for c in seen)
