"""Per domain: a TTL-lowering DAG (run days ahead) and the cutover DAG.

    check_ttl → gate → approve_mx_swap (HITL) → final_pass → reverify → swap_mx → drain → final_proof
                                              ↘ (rejected) record_rejection

The cutover is scheduled by the Asset events of every building on the domain (it starts when all
of them are proven) and can be triggered by hand. Each task calls one step function of
`mailshift.cutover.steps`, which reads its state from the database and DNS: a retried or re-run
task never swaps twice. The gate is the core's, with its default conditions (notices included):
the same verdict as from the CLI. There is no parameter that skips it. This module only wires
Airflow to the core: no SQL, no rules.
"""

from __future__ import annotations

from contextlib import closing
from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, get_current_context, task

from mailshift.airflow.building import DEFAULT_ARGS, building_asset
from mailshift.airflow.callbacks import post
from mailshift.airflow.connections import database_url, dns_provider


def _connect():
    from mailshift.store import db

    return db.connect(database_url())


def _notify(message) -> None:
    post(message)


def _run(step, *args, **kwargs):
    """Run one cutover step on its own database connection, closed even when the step raises."""
    with closing(_connect()) as conn:
        return step(conn, *args, **kwargs)


def _approval() -> dict:
    """The approval task's recorded response (who chose what, when)."""
    return get_current_context()["ti"].xcom_pull(task_ids="approve_mx_swap") or {}


# step modules are imported inside the tasks: DAG files must parse without loading the cutover core
@task(task_id="check_ttl")
def check_ttl(domain: str) -> dict:
    from mailshift.cutover.steps import check_ttl_step

    return _run(check_ttl_step, dns_provider(), domain, notify=_notify)


@task(task_id="gate")
def gate(domain: str) -> dict:
    """Every mailbox proven or waived, no open exception, passes finished, customers told."""
    from mailshift.cutover.steps import gate_step

    return _run(gate_step, domain, notify=_notify)


@task(task_id="final_pass", execution_timeout=timedelta(hours=12))
def final_pass(domain: str) -> dict:
    from mailshift.cutover.steps import final_pass_step

    return _run(final_pass_step, domain, copy_fn=_copy_fn())


@task(task_id="reverify")
def reverify(domain: str) -> dict:
    from mailshift.cutover.steps import reverify_step

    return _run(reverify_step, domain, verify_fn=_verify_fn())


@task(task_id="swap_mx", retries=5, retry_delay=timedelta(minutes=1))
def swap_mx(domain: str, new_mx: list[str]) -> dict:
    """The one-shot MX swap; the approver is read from the approval task's recorded response."""
    from mailshift.cutover.steps import swap_step

    response = _approval()
    user = response.get("responded_by_user") or {}
    who = user.get("name") or user.get("id")
    if not who or response.get("chosen_options") != ["Approve"]:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("no recorded approval: the MX swap needs a person's Approve")
    return _run(swap_step, dns_provider(), domain, new_mx, approved_by=str(who),
                approved_at=response.get("responded_at"), requested_by=get_current_context()["ti"].run_id,
                notify=_notify)


@task(task_id="drain", execution_timeout=timedelta(days=2))
def drain(domain: str) -> dict:
    from mailshift.cutover.steps import drain_step

    params = get_current_context()["params"]
    return _run(drain_step, domain, copy_fn=_copy_fn(), quiet_seconds=params.get("drain_quiet_seconds"),
                poll_seconds=float(params.get("drain_poll_seconds", 15)))


@task(task_id="final_proof")
def final_proof(domain: str, drained: dict) -> dict:
    from mailshift.cutover.steps import final_proof_step

    return _run(final_proof_step, domain, verify_fn=_verify_fn(), notify=_notify,
                drained=int(drained.get("copied", 0)))


@task(task_id="record_rejection", trigger_rule="all_skipped")
def record_rejection(domain: str) -> dict:
    """The approval was rejected: nothing changes in DNS or any mailbox; the refusal is recorded."""
    from mailshift.cutover.steps import abort_step

    who = (_approval().get("responded_by_user") or {}).get("name") or "unknown"
    return _run(abort_step, domain, by=str(who), reason="MX swap approval rejected", notify=_notify)


def _copy_fn():
    from mailshift.airflow.building import DEST_CONN_ID
    from mailshift.airflow.connections import endpoint
    from mailshift.copy.copy_one import copy_one

    return lambda conn, mailbox_id, kind: copy_one(conn, mailbox_id, kind, resolve=endpoint,
                                                   dest_conn_id=DEST_CONN_ID)


def _verify_fn():
    from mailshift.airflow.building import DEST_CONN_ID
    from mailshift.airflow.connections import endpoint
    from mailshift.verify import verify_building

    return lambda conn, building_id, kind="pre_cutover": verify_building(
        conn, building_id, resolve=endpoint, dest_conn_id=DEST_CONN_ID, kind=kind, dsn=database_url())


APPROVAL_BODY = """\
Domain **{{ params.domain }}**: the gate passed.

{% set g = ti.xcom_pull(task_ids='gate') %}
- buildings: {{ g.summary.buildings }}, mailboxes: {{ g.summary.mailboxes }}
- messages: {{ g.summary.messages }}, bytes: {{ g.summary.bytes }}
- waivers: {{ g.summary.waivers | length }}{% for w in g.summary.waivers %}
  - {{ w }}{% endfor %}

Approving swaps the MX to {{ params.new_mx }}. There is no rollback.
"""


def build_cutover_dag(domain: str, building_ids: list[str]) -> DAG:
    safe = domain.replace(".", "_").replace("-", "_")
    with DAG(
        dag_id=f"mailshift_cutover_{safe}",
        description=f"MX cutover of {domain} ({len(building_ids)} buildings)",
        schedule=[building_asset(b) for b in building_ids] or None,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mailshift", "cutover", domain],
        render_template_as_native_obj=True,
        params={"domain": Param(domain, const=domain),
                "new_mx": Param([f"10 mx-new.{domain}."], type="array",
                                description="the new MX records (preference and host)"),
                "drain_quiet_seconds": Param(None, type=["null", "number"],
                                             description="quiet time before the drain ends (default 2 x old TTL)"),
                "drain_poll_seconds": Param(15, type="number")},
        doc_md=__doc__,
    ) as dag:
        ttl = check_ttl(domain)
        verdict = gate(domain)
        approve = ApprovalOperator(
            task_id="approve_mx_swap",
            subject=f"Swap the MX of {domain}?",
            body=APPROVAL_BODY,
            response_timeout=timedelta(days=3),
            retries=1,
        )
        final = final_pass(domain)
        again = reverify(domain)
        swapped = swap_mx(domain, "{{ params.new_mx }}")
        drained = drain(domain)
        proof = final_proof(domain, drained)
        rejected = record_rejection(domain)
        ttl >> verdict >> approve >> final >> again >> swapped >> drained >> proof
        final >> rejected
    return dag


@task(task_id="lower_ttl")
def lower_ttl(domain: str) -> dict:
    from mailshift.cutover.ttl import lower_ttl as lower

    ctx = get_current_context()
    change = _run(lower, dns_provider(), domain, int(ctx["params"]["ttl"]), requested_by=ctx["ti"].run_id)
    return {"change_id": change.id, "status": change.status}


def build_ttl_dag(domain: str) -> DAG:
    safe = domain.replace(".", "_").replace("-", "_")
    with DAG(
        dag_id=f"mailshift_lower_ttl_{safe}",
        description=f"Lower the MX TTL of {domain}, days before its cutover",
        schedule=None,
        catchup=False,
        default_args=DEFAULT_ARGS,
        tags=["mailshift", "cutover", domain],
        params={"ttl": Param(300, type="integer", minimum=5)},
    ) as dag:
        lower_ttl(domain)
    return dag


#: cutover DAG files (`dags/mailshift_cutover_N.py`): the dag-processor's manager stores the asset
#: references of one file in one go (~9 s for 5,000 building assets in one file, during which the
#: results of other parsers wait); split in four, no file holds it up for more than ~2.5 s
CUTOVER_FILES = 4


def cutover_dags(directory=None, part: int = 0, parts: int = 1) -> dict[str, DAG]:
    """Cutover and TTL DAGs of the domains in `part` of `parts` (domains dealt round-robin)."""
    from mailshift.planning import snapshot

    try:
        manifest = snapshot.read_manifest(directory or snapshot.default_dir())
    except snapshot.SnapshotError:
        return {}
    import time

    from airflow.sdk import get_parsing_context

    from mailshift.airflow.factory import check_budget

    wanted = get_parsing_context().dag_id
    started = time.monotonic()
    out = {}
    domains = sorted((manifest.get("domains") or {}).items())[part::parts]
    for n, (domain, buildings) in enumerate(domains, 1):
        safe = domain.replace(".", "_").replace("-", "_")
        if wanted and wanted not in (f"mailshift_cutover_{safe}", f"mailshift_lower_ttl_{safe}"):
            continue
        for dag in (build_cutover_dag(domain, buildings), build_ttl_dag(domain)):
            out[dag.dag_id] = dag
        if not wanted:
            check_budget(f"cutover DAGs (part {part}/{parts})", n, len(domains), "domains", started)
    return out
