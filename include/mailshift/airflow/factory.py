"""Turn snapshot shards into building DAGs, quickly and only as many as needed.

Each `dags/mailshift_buildings_shard_NN.py` asks for its shard. At parse time for a task run
(`get_parsing_context().dag_id` set) only that one DAG is built. A shard whose parse would take
longer than its budget raises, so the dag-processor records an import error instead of silently
timing out (which loses every DAG of the file with no error at all).

The budget covers the whole parse, but the file only sees its own building time: the
dag-processor then serialises every DAG, which costs more than building it. So the check
projects the parse from the build time with the measured build share (bench/README.md, "DAG
parsing": building is about a quarter of a shard's parse) and refuses the shard when the
projection passes the budget.
"""

from __future__ import annotations

import time
from pathlib import Path

from airflow.sdk import DAG, get_parsing_context

from mailshift import settings
from mailshift.airflow.building import build_building_dag, building_dag_id
from mailshift.errors import ShardOverBudget  # noqa: F401  (raised here)
from mailshift.notify.alerts import UI_MOUNT
from mailshift.planning import snapshot

#: seconds one shard file may spend building its DAGs (dag-processor timeout is 50 s by default)
SHARD_BUDGET_SECONDS = settings.get_float(settings.SHARD_BUDGET_SECONDS, 10.0)
#: share of a shard's parse spent building its DAGs (the rest: serialisation, fork, hand-over)
BUILD_SHARE = settings.get_float(settings.SHARD_BUILD_SHARE, 0.3)


def projected_parse_seconds(build_seconds: float, build_share: float = BUILD_SHARE) -> float:
    """The whole parse of a shard (build + serialisation) projected from its build time."""
    return build_seconds / build_share


def check_budget(what: str, done: int, total: int, noun: str, started: float, hint: str = "") -> None:
    """Raise ShardOverBudget once the projected parse of a DAG file passes its budget. Called
    while building, not only at the end: a file far over budget would otherwise run into the
    dag-processor's dag_file_processor_timeout, be killed and lose all its DAGs without any
    import error (the silent failure this check exists to prevent)."""
    took = time.monotonic() - started
    projected = projected_parse_seconds(took)
    if projected > SHARD_BUDGET_SECONDS:
        raise ShardOverBudget(f"{what}: {done} of {total} {noun} took {took:.1f}s to build, {projected:.1f}s with "
                              f"serialisation (budget {SHARD_BUDGET_SECONDS:g}s){hint}")


def _check_shard_files(manifest: dict, dag_file: str | None) -> None:
    """Every shard of the snapshot needs its DAG file, or its buildings would silently vanish."""
    if dag_file is None:
        return
    files = list(Path(dag_file).parent.glob("mailshift_buildings_shard_*.py"))
    if len(files) < manifest["shards"]:
        raise ShardOverBudget(f"the snapshot has {manifest['shards']} shards but dags/ has only {len(files)} "
                              "shard files: add files or re-plan with --shards "
                              f"{len(files)}")


def building_dags(shard: int, directory=None, dag_file: str | None = None) -> dict[str, DAG]:
    """{dag_id: DAG} for the buildings of one snapshot shard (empty if there is no snapshot)."""
    directory = directory or snapshot.default_dir()
    started = time.monotonic()
    try:
        manifest = snapshot.read_manifest(directory)
    except snapshot.SnapshotError:
        return {}  # no plan yet: nothing to schedule (`mailshift plan` writes the snapshot)
    if shard == 0:
        _check_shard_files(manifest, dag_file)
    if shard >= manifest["shards"]:
        return {}
    wanted = get_parsing_context().dag_id
    dags = {}
    buildings = snapshot.load_shard(directory, shard, manifest=manifest)
    for building in buildings:
        dag_id = building_dag_id(building.id)
        if wanted and wanted != dag_id:
            continue
        dags[dag_id] = with_ui_links(build_building_dag(building))
        if not wanted:
            check_budget(f"snapshot shard {shard}", len(dags), len(buildings), "building DAGs", started,
                         "; re-plan with more shards")
    return dags


SELFCHECK_DAG_ID = "mailshift_selfcheck"


def selfcheck_dag() -> DAG:
    """`mailshift_selfcheck`: one task on the `default` queue that reaches the mailshift database.
    A run that ends `success` proves a worker took the task from the broker, started it through
    the execution API (the URL the workers are given) and reached the database - the first thing
    to trigger after deploying workers; the short distributed test in tests/e2e runs it."""
    from datetime import timedelta

    from airflow.sdk import task

    from mailshift.airflow.building import OWNER

    @task(task_id="reach", retries=1, retry_delay=timedelta(seconds=5), queue="default", owner=OWNER)
    def reach() -> dict:
        import socket

        from mailshift.airflow.connections import database_url
        from mailshift.store import db
        from mailshift.store.cutover import ping

        conn = db.connect(database_url())
        try:
            ping(conn)
        finally:
            conn.close()
        return {"worker": socket.getfqdn(), "database": "reachable"}

    with DAG(dag_id=SELFCHECK_DAG_ID, schedule=None, catchup=False, tags=["mailshift", "selfcheck"],
             description="a worker runs one task through the execution API and reaches the database",
             doc_md=selfcheck_dag.__doc__) as dag:
        reach()
    return with_ui_links(dag)


# -- DAG docs link to the mailshift pages (the pages link back to the runs) -------------------

def wave_dag_id(number) -> str:
    """The DAG of a wave (the one place of the name: mailshift.airflow.wave, the plugin)."""
    return f"mailshift_wave_{number}"


def cutover_dag_ids(domain: str) -> list[str]:
    """The cutover and TTL-lowering DAGs of a domain (mailshift.airflow.cutover names them so)."""
    safe = domain.replace(".", "_").replace("-", "_")
    return [f"mailshift_cutover_{safe}", f"mailshift_lower_ttl_{safe}"]


def ui_page(dag) -> tuple[str, str]:
    """(label, path under the mailshift mount) of the page about what this DAG works on."""
    from urllib.parse import quote

    from mailshift.airflow.building import building_dag_id

    dag_id = dag.dag_id
    prefix = building_dag_id("")
    if dag_id.startswith(prefix):
        return "this building's page", "building/" + quote(dag_id[len(prefix):], safe="")
    if dag_id.startswith(wave_dag_id("")):
        return "this wave's page", "wave/" + dag_id[len(wave_dag_id("")):]
    domains = [t for t in (dag.tags or ()) if "." in t]
    if domains and dag_id in cutover_dag_ids(domains[0]):
        return "this domain's page", "domain/" + quote(domains[0], safe="")
    return "the migration overview", ""


def ui_links_md(dag) -> str:
    """The Markdown appended to a DAG's docs: its mailshift page, the overview and the map, at
    the configured base URL (settings.ui_base_url), never a file path."""
    base = settings.ui_base_url()
    root = f"{base}/{UI_MOUNT}/" if base else f"/{UI_MOUNT}/"
    label, path = ui_page(dag)
    return (f"\n\n---\n**mailshift:** [{label}]({root}{path}) · [migration overview]({root}) · "
            f"[building map]({root}map)\n")


def with_ui_links(dags):
    """Append the mailshift links to the docs of one DAG or of each DAG of a {dag_id: DAG} dict."""
    for dag in (dags.values() if isinstance(dags, dict) else [dags]):
        dag.doc_md = (dag.doc_md or "") + ui_links_md(dag)
    return dags
