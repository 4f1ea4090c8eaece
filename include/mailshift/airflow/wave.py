"""One DAG per wave: announce → run the wave's building DAGs (a few at a time) → summary.

The wave's buildings are read from the database when the wave runs (not at parse time);
`max_parallel_buildings` (a run parameter, read when the run runs) bounds how many building DAG
runs are active at once: the mapped trigger task number i starts its building run only once task
i - n has finished (its building run ended), and until then waits in `up_for_reschedule`,
holding no worker slot. The source system pools bound the IMAP connections underneath.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowRescheduleException

from mailshift.airflow.building import DEFAULT_ARGS, DEFAULT_PASS, building_dag_id
from mailshift.airflow.callbacks import page_links, post
from mailshift.airflow.connections import database_url
from mailshift.airflow.factory import wave_dag_id
from mailshift.airflow.failfast import fail_fast
from mailshift.rules.states import PASS_KINDS

MAX_PARALLEL_BUILDINGS = 4
#: the highest value the parameter accepts (the parse-time cap of the mapped trigger tasks)
MAX_PARALLEL_CEILING = 64
FINISHED = ["success", "failed", "skipped", "upstream_failed", "removed"]
WINDOW_RECHECK = timedelta(seconds=10)


class BuildingRun(TriggerDagRunOperator):
    """TriggerDagRunOperator with a window: the mapped task i triggers its building only when the
    task i - max_parallel_buildings has finished (so at most that many building runs are active)."""

    def execute(self, context):
        ti = context["ti"]
        n = int(context["params"].get("max_parallel_buildings") or MAX_PARALLEL_BUILDINGS)
        if ti.map_index >= n and not ti.get_ti_count(dag_id=ti.dag_id, map_index=ti.map_index - n,
                                                     task_ids=[ti.task_id], run_ids=[ti.run_id], states=FINISHED):
            self.log.info("waiting: building run %d of this wave must finish first (max_parallel_buildings=%d)",
                          ti.map_index - n, n)
            raise AirflowRescheduleException(datetime.now(UTC) + WINDOW_RECHECK)
        return super().execute(context)


def _connect():
    from mailshift.store import db

    return db.connect(database_url())


@task(task_id="announce")
@fail_fast()
def announce(wave: int) -> list[str]:
    """The wave's building DAG ids; posts the wave's start to Slack."""
    from mailshift.notify import alerts, slack
    from mailshift.planning.waves import wave_buildings, wave_totals
    from mailshift.store.plans import wave_estimated_bytes

    conn = _connect()
    try:
        buildings = wave_buildings(conn, wave)
        totals = wave_totals(conn, wave)
        est = wave_estimated_bytes(conn, wave)
    finally:
        conn.close()
    ti = get_current_context()["ti"]
    run_url, _ = page_links(ti, f"wave/{wave}")
    post(slack.wave_started(wave, len(buildings), totals["mailboxes"], est, run_url=run_url,
                            dedup_key=alerts.run_key("wave_started", ti.dag_id, ti.run_id)))
    ti.xcom_push(key="started", value=time.time())
    return [building_dag_id(b) for b in buildings]


@task(task_id="summary", trigger_rule="all_done")
@fail_fast()
def summary(wave: int, started: float | None = None) -> dict:
    """Counts, bytes, duration and mailboxes not proven, to Slack."""
    from mailshift.notify import alerts, slack
    from mailshift.planning.waves import wave_totals

    conn = _connect()
    try:
        t = wave_totals(conn, wave)
    finally:
        conn.close()
    try:  # the template renders the XCom as a string ("None" when announce did not push it)
        seconds = time.time() - float(started)
    except (TypeError, ValueError):
        seconds = 0.0
    ti = get_current_context()["ti"]
    run_url, pages = page_links(ti, f"wave/{wave}")
    failing = t["proven_buildings"] < t["buildings"]
    # keyed by the figures: a cleared summary posts again only when they changed; when the task
    # then fails, this message is the alert (its failure callback stays silent)
    post(slack.wave_finished(wave, t["buildings"], t["proven_buildings"], t["mailboxes"], t["not_proven"],
                             t["messages"], t["bytes"], seconds, run_url=run_url, page_url=pages,
                             dedup_key=alerts.run_key("wave_finished", ti.dag_id, ti.run_id, t["proven_buildings"],
                                                      t["buildings"], t["not_proven"])),
         silence_task_failure=failing)
    if failing:
        from airflow.sdk.exceptions import AirflowFailException

        # The summary is the wave's last task: failing it makes the wave run itself show failed.
        raise AirflowFailException(f"wave {wave}: {t['buildings'] - t['proven_buildings']} building(s) not proven, "
                                   f"{t['not_proven']} mailbox(es)")
    return t


def build_wave_dag(wave: dict) -> DAG:
    """The DAG of one wave from its manifest entry; operators trigger it with the pass to run."""
    number = wave["number"]
    with DAG(
        dag_id=wave_dag_id(number),
        description=f"{wave.get('name', f'wave {number}')}: {wave.get('buildings', '?')} buildings",
        schedule=None,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mailshift", "wave", wave.get("kind", "regular")],
        params={"pass_kind": Param(DEFAULT_PASS, enum=list(PASS_KINDS)),
                "max_parallel_buildings": Param(MAX_PARALLEL_BUILDINGS, type="integer", minimum=1,
                                                maximum=MAX_PARALLEL_CEILING,
                                                description="building DAG runs active at once (read at run time)")},
        doc_md=__doc__,
    ) as dag:
        dag_ids = announce(number)
        runs = BuildingRun.partial(
            task_id="run_buildings",
            conf={"pass_kind": "{{ params.pass_kind }}"},
            # the building run carries the wave run's id; a retry clears and reruns it, which
            # the ledger makes safe (no message is copied twice)
            trigger_run_id="{{ run_id }}",
            reset_dag_run=True,
            wait_for_completion=True,
            poke_interval=5,
            allowed_states=["success"],
            failed_states=["failed"],
            max_active_tis_per_dagrun=MAX_PARALLEL_CEILING,  # the run's parameter narrows it (BuildingRun)
            retries=1,
        ).expand(trigger_dag_id=dag_ids)
        done = summary(number, "{{ ti.xcom_pull(task_ids='announce', key='started') }}")
        runs >> done
    return dag


def wave_dags(directory=None) -> dict[str, DAG]:
    """{dag_id: DAG} for every wave of the snapshot's manifest (none before the first plan)."""
    from mailshift.planning import snapshot

    try:
        manifest = snapshot.read_manifest(directory or snapshot.default_dir())
    except snapshot.SnapshotError:
        return {}
    return {wave_dag_id(w["number"]): build_wave_dag(w) for w in manifest.get("waves", [])}
