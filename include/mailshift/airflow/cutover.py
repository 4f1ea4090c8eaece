"""Per domain: a TTL-lowering DAG (run days ahead) and the cutover DAG.

    route ─┬─ check_ttl → gate → approve_mx_swap (HITL) → plan_final → final_pass_<pool> (mapped)
           │    → plan_reverify → reverify_<pool> (mapped) → reverify_merge → reverify_close (mapped)
           │    → swap_mx ─┐                       ↘ (rejected) record_rejection
           └─ resume_after_swap ─┴→ plan_drain → drain_<pool> (mapped) → plan_final_proof
                → final_verify_<pool> (mapped) → final_merge → final_close (mapped) → final_proof

Every step that touches mailboxes is mapped over mailbox batches (`cutover.steps.plan_batches`),
one mapped task per source system, in that system's pool and Celery queue: the source
connections are bounded by the pools, the destination connections by the same tasks (one
destination session per running task, so at most the sum of the source pools). No task's
duration grows with the domain beyond `mailboxes_per_task` mailboxes (Airflow caps a map at
[core] max_map_length; the batch grows only past that). The closes of a verification (GX suite
+ report) are mapped per building, in the source system's queue but not its pool (they hold no
source connection): every worker serving that system takes them.

`route` reads the database: once the MX swap is recorded, a re-triggered run skips the approval
and everything before the drain (skipped, not failed; no alert) and drains and proves again.
The approval names who may approve (Airflow HITL assigned users, from the Airflow configuration
`[mailshift] cutover_approvers`, e.g. `AIRFLOW__MAILSHIFT__CUTOVER_APPROVERS=ops-lead:Sato Hanako`)
and shows the gate's summary as text. The gate is the core's, with its default conditions
(notices included); there is no parameter that skips it. No SQL, no rules here.
"""

from __future__ import annotations

from contextlib import closing
from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from mailshift.airflow.building import DEFAULT_ARGS, building_asset, verify_close_fn, verify_part_fn
from mailshift.airflow.callbacks import post
from mailshift.airflow.connections import database_url, dns_provider
from mailshift.airflow.failfast import fail_fast


def _connect():
    from mailshift.store import db

    return db.connect(database_url())


def _notify(message) -> None:
    post(message)


def _run(step, *args, **kwargs):
    """Run one cutover step on its own database connection, closed even when the step raises;
    a deliberate failure (identity, credentials, configuration) fails at once, never retried."""
    with closing(_connect()) as conn, fail_fast():
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


@task.branch(task_id="route")
def route(domain: str) -> list[str]:
    """After the MX swap a (re-triggered) run goes straight to the drain; before it, to the TTL check."""
    from mailshift.cutover.steps import swap_applied

    with closing(_connect()) as conn:
        return ["resume_after_swap"] if swap_applied(conn, domain) is not None else ["check_ttl"]


@task(task_id="resume_after_swap")
def resume_after_swap(domain: str) -> dict:
    from mailshift.cutover.steps import swap_applied

    with closing(_connect()) as conn:
        ch = swap_applied(conn, domain)
    print(f"MX of {domain} already swapped (dns_change #{ch.id}): approval and pre-swap steps skipped")
    return {"change_id": ch.id}


def _plan(domain: str, pool: str, size: int | None = None, max_batches: int = 0, **kw) -> list[dict]:
    from mailshift.cutover.steps import plan_batches
    from mailshift.planning.snapshot import pool_name

    params = get_current_context()["params"]
    with closing(_connect()) as conn:
        return plan_batches(conn, domain, pool_name, pool, size=size or int(params["mailboxes_per_task"]),
                            max_batches=max_batches or MAX_BATCHES, **kw)


#: mapped tasks per map: below Airflow's default [core] max_map_length (1024)
MAX_BATCHES = 1000


@task
def plan_final(domain: str, pool: str) -> list[dict]:
    """The final pass's batches of one source system (pool); empty once the MX is swapped."""
    return _plan(domain, pool)


@task(execution_timeout=timedelta(hours=2), map_index_template="{{ batch_label }}")
def final_pass(domain: str, batch: dict) -> dict:
    from mailshift.cutover.steps import final_pass_batch

    get_current_context()["batch_label"] = batch.get("label", "")
    return _run(final_pass_batch, domain, batch, copy_fn=_copy_fn())


@task
def plan_verify(domain: str, pool: str, kind: str) -> list[dict]:
    """Batches of one pool with a verify run opened per building (the final proof: each mailbox's
    mode, full where the ledger changed since the pre-cutover proof, else sample)."""
    from mailshift.cutover.steps import attach_verify_runs, final_proof_modes, swap_applied

    rate = float(get_current_context()["params"].get("final_sample_rate", 0.05))
    modes = None
    with closing(_connect()) as conn:
        if kind == "pre_cutover" and swap_applied(conn, domain) is not None:
            raise AirflowSkipException("the MX is swapped: the pre-cutover verification is over")
        if kind == "final":
            modes, _guarantee = final_proof_modes(conn, domain, rate)
    batches = _plan(domain, pool, modes=modes, sample_rate=rate)
    with closing(_connect()) as conn:
        attach_verify_runs(conn, batches, kind)
    return batches


@task(map_index_template="{{ batch_label }}")
def verify_batch(batch: dict, kind: str) -> dict:
    return verify_part_fn(batch, kind=kind)


@task(trigger_rule="all_success")
def merge_parts(parts, batches) -> list[dict]:
    """The mapped verify tasks of one pool merged into the closing work: one item per building
    (its run, its merged counts), so the closes map over buildings, not over the batches."""
    from mailshift.cutover.steps import close_chunks

    return close_chunks(list(batches or []), list(parts or []), MAX_BATCHES)


@task(map_index_template="{{ batch_label }}")
def close_runs(item: dict) -> dict:
    """Expectations and report of the building verify run(s) of this item."""
    chunk = item.get("close") or []
    get_current_context()["batch_label"] = " ".join(b for b, _ in chunk) if chunk else "nothing to close"
    out = {"buildings": 0, "proven": 0, "reports": [], "runs": []}
    for building, run_id in chunk:
        v = verify_close_fn(building, run_id, [item.get("merged") or {}])
        out["runs"].append(run_id)
        out["buildings"] += 1
        out["proven"] += int(bool(v["proven"]))
        out["reports"].append(v["report"])
    return out


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


@task
def plan_drain(domain: str, pool: str) -> list[dict]:
    """The drain's batches of one pool: `drain_tasks_per_source` of them, so every batch drains at
    once (each task polls its mailboxes until they are quiet, holding one source connection)."""
    return _plan(domain, pool, size=1, max_batches=int(get_current_context()["params"]["drain_tasks_per_source"]))


@task(execution_timeout=timedelta(days=2), map_index_template="{{ batch_label }}")
def drain(domain: str, batch: dict) -> dict:
    """Drain one batch: STATUS probes find the mailboxes with new mail; only those get a pass."""
    from mailshift.airflow.connections import endpoint
    from mailshift.cutover.drain import StatusProbe
    from mailshift.cutover.steps import drain_step

    ctx = get_current_context()
    ctx["batch_label"] = batch.get("label", "")
    params = ctx["params"]
    ids = [m for g in batch.get("groups", []) for m in g["mailbox_ids"]]
    if not ids:
        return {"copied": 0, "mailboxes": 0}
    r = _run(drain_step, domain, copy_fn=_copy_fn(), quiet_seconds=params.get("drain_quiet_seconds"),
             poll_seconds=float(params.get("drain_poll_seconds", 15)), mailbox_ids=ids,
             changed=StatusProbe(endpoint), log=print)
    return {k: r[k] for k in ("copied", "failed", "refused", "bytes", "rounds", "passes", "checked", "seconds")} | {
        "mailboxes": len(ids), "round_seconds_max": max(r["round_seconds"] or [0])}


@task(task_id="final_proof")
def final_proof(domain: str, drained, closed) -> dict:
    """Every mailbox's latest proof a passing final one, no open exception; the Slack summary says
    what was re-read in full and what the ledger plus the sample covers."""
    from mailshift.cutover.steps import final_proof_step
    from mailshift.store.proofs import verify_guarantee

    copied = sum(int((d or {}).get("copied", 0)) for per_pool in drained for d in (per_pool or []))
    reports = [r for per_pool in closed for c in (per_pool or []) for r in (c or {}).get("reports", [])]
    runs = [int(r) for per_pool in closed for c in (per_pool or []) for r in (c or {}).get("runs", [])]
    with closing(_connect()) as conn:
        guarantee = verify_guarantee(conn, runs)
    guarantee["sample_rate"] = float(get_current_context()["params"].get("final_sample_rate", 0.05))
    return _run(final_proof_step, domain, verify_fn=None, notify=_notify, drained=copied,
                reports=reports, guarantee=guarantee)


@task(task_id="record_rejection", trigger_rule="all_skipped")
def record_rejection(domain: str) -> dict:
    """The approval was rejected: nothing changes in DNS or any mailbox; the refusal is recorded.
    Skipped when nobody was asked (a re-triggered run after the swap goes round the approval)."""
    from mailshift.cutover.steps import abort_step

    response = _approval()
    if not response.get("chosen_options"):
        raise AirflowSkipException("no approval was asked in this run: nothing was rejected")
    who = (response.get("responded_by_user") or {}).get("name") or "unknown"
    return _run(abort_step, domain, by=str(who), reason="MX swap approval rejected", notify=_notify)


def _copy_fn():
    from mailshift.airflow.building import DEST_CONN_ID
    from mailshift.airflow.connections import endpoint
    from mailshift.copy.copy_one import copy_one

    return lambda conn, mailbox_id, kind: copy_one(conn, mailbox_id, kind, resolve=endpoint,
                                                   dest_conn_id=DEST_CONN_ID)


def approvers() -> list[dict] | None:
    """HITL assigned users from `[mailshift] cutover_approvers` ("id[:name], ..."); None: anyone."""
    from airflow.configuration import conf

    raw = conf.get("mailshift", "cutover_approvers", fallback="") or ""
    users = []
    for item in (x.strip() for x in raw.split(",")):
        if item:
            uid, _, name = item.partition(":")
            users.append({"id": uid.strip(), "name": (name or uid).strip()})
    return users or None


APPROVAL_BODY = "{{ ti.xcom_pull(task_ids='gate')['approval_text'] }}\n\nApproving swaps the MX to " \
                "{{ params.new_mx | join(', ') }}. There is no rollback."


def _where(pool: str) -> dict:
    """Pool and Celery queue of a task that holds a connection to the pool's source system."""
    from types import SimpleNamespace

    from mailshift.airflow.building import copy_queue

    return {"pool": pool, "queue": copy_queue(SimpleNamespace(pool=pool))} if pool != "default_pool" else {}


def _per_pool(pool: str, name: str, plan_task, plan_args: tuple, step, step_kw: dict, upstream=None, **plan_kw):
    """plan_<name>_<pool> -> <name>_<pool> (mapped over the plan, in the pool and its queue)."""
    plan = plan_task.override(task_id=f"plan_{name}_{pool}", **plan_kw)(*plan_args)
    if upstream is not None:
        upstream >> plan
    return plan, step.override(task_id=f"{name}_{pool}", **_where(pool)).partial(**step_kw).expand(batch=plan)


def _verify_step(domain: str, pool: str, name: str, kind: str, upstream):
    """Verification of one pool's mailboxes: open runs, mapped re-read, merge, mapped close (one
    task per building). The closes hold no source connection (database, GX, report): they stay
    out of the source pool but go to its queue, so every worker that serves the source system
    shares them (on `default` they all landed on the one control worker)."""
    plan, parts = _per_pool(pool, name, plan_verify, (domain, pool, kind), verify_batch, {"kind": kind}, upstream)
    merged = merge_parts.override(task_id=f"{name}_merge_{pool}")(parts, plan)
    queue = {"queue": _where(pool)["queue"]} if pool != "default_pool" else {}
    return close_runs.override(task_id=f"{name}_close_{pool}", **queue).expand(item=merged)


def _params(domain: str) -> dict:
    return {"domain": Param(domain, const=domain),
            "new_mx": Param([f"10 mx-new.{domain}."], type="array",
                            description="the new MX records (preference and host)"),
            "mailboxes_per_task": Param(200, type="integer", minimum=1,
                                        description="mailboxes per mapped task (final pass, verification)"),
            "drain_tasks_per_source": Param(4, type="integer", minimum=1,
                                            description="drain tasks per source system (each holds one "
                                                        "source connection; keep <= its pool)"),
            "drain_quiet_seconds": Param(None, type=["null", "number"],
                                         description="quiet time before the drain ends (default 2 x old TTL)"),
            "drain_poll_seconds": Param(15, type="number"),
            "final_sample_rate": Param(0.05, type="number", minimum=0, maximum=1,
                                       description="final proof: share of the messages re-read in mailboxes "
                                                   "unchanged since their pre-cutover proof (1 = all in full)")}


def _pre_swap(domain: str, pools: list[str]):
    ttl = check_ttl(domain)
    verdict = gate(domain)
    approve = ApprovalOperator(task_id="approve_mx_swap", subject=f"Swap the MX of {domain}?", body=APPROVAL_BODY,
                               response_timeout=timedelta(days=3), retries=1, assigned_users=approvers())
    ttl >> verdict >> approve
    rejected = record_rejection(domain)
    swapped = swap_mx(domain, "{{ params.new_mx }}")
    for pool in pools:
        plan, finals = _per_pool(pool, "final_pass", plan_final, (domain, pool), final_pass, {"domain": domain},
                                 approve)
        plan >> rejected
        _verify_step(domain, pool, "reverify", "pre_cutover", finals) >> swapped
    return ttl, swapped


def _post_swap(domain: str, pools: list[str], upstream: list):
    drained, closed = [], []
    for pool in pools:
        _plan_task, d = _per_pool(pool, "drain", plan_drain, (domain, pool), drain, {"domain": domain}, upstream,
                                  trigger_rule="none_failed_min_one_success")
        drained.append(d)
    for pool in pools:
        closed.append(_verify_step(domain, pool, "final_verify", "final", drained))
    final_proof(domain, drained, closed)


def build_cutover_dag(domain: str, building_ids: list[str], pools: list[str] | None = None) -> DAG:
    from mailshift.airflow.factory import cutover_dag_ids

    pools = sorted(pools or ["default_pool"])
    with DAG(
        dag_id=cutover_dag_ids(domain)[0],
        description=f"MX cutover of {domain} ({len(building_ids)} buildings)",
        schedule=[building_asset(b) for b in building_ids] or None,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mailshift", "cutover", domain],
        render_template_as_native_obj=True,
        params=_params(domain),
        doc_md=__doc__,
    ) as dag:
        routed = route(domain)
        resumed = resume_after_swap(domain)
        ttl, swapped = _pre_swap(domain, pools)
        routed >> [ttl, resumed]
        _post_swap(domain, pools, [swapped, resumed])
    return dag


@task(task_id="lower_ttl")
def lower_ttl(domain: str) -> dict:
    from mailshift.cutover.ttl import lower_ttl as lower

    ctx = get_current_context()
    change = _run(lower, dns_provider(), domain, int(ctx["params"]["ttl"]), requested_by=ctx["ti"].run_id)
    return {"change_id": change.id, "status": change.status}


def build_ttl_dag(domain: str) -> DAG:
    from mailshift.airflow.factory import cutover_dag_ids

    with DAG(
        dag_id=cutover_dag_ids(domain)[1],
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

    from mailshift.airflow.factory import check_budget, cutover_dag_ids

    wanted = get_parsing_context().dag_id
    started = time.monotonic()
    out = {}
    domains = sorted((manifest.get("domains") or {}).items())[part::parts]
    for n, (domain, buildings) in enumerate(domains, 1):
        if wanted and wanted not in cutover_dag_ids(domain):
            continue
        pools = [v["pool"] for v in (manifest.get("source_systems") or {}).values()]
        for dag in (build_cutover_dag(domain, buildings, pools), build_ttl_dag(domain)):
            out[dag.dag_id] = dag
        if not wanted:
            check_budget(f"cutover DAGs (part {part}/{parts})", n, len(domains), "domains", started)
    return out
