"""One DAG per building: preflight → copy (mapped over mailbox batches, in the source system's
pool) → verify (opened once, mapped over the same batches in the same pool, closed with the
expectations and the report) → mark proven → Asset event for the domain's cutover.

Built from a snapshot entry (never a database query at parse time). Tasks are thin: they
resolve connections and call `mailshift` functions; the ledger makes every retry safe.
"""

from __future__ import annotations

from contextlib import closing
from datetime import timedelta

from airflow.sdk import DAG, Asset, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from mailshift import settings
from mailshift.airflow.callbacks import task_failure_alert
from mailshift.airflow.connections import database_url, endpoint
from mailshift.airflow.failfast import fail_fast, not_retried
from mailshift.rules.states import PASS_KINDS, PROOF_OK

OWNER = "mailshift-ops"
DEST_CONN_ID = "mailshift_dest"
BATCH_SIZE = 5
#: a run without conf copies while customers still use the old servers: the safe pass
DEFAULT_PASS = "prestage"

#: how to choose the pass: building DAGs carry no Param, because the dag-processor validates a
#: DAG's params again for every task it serialises (about 40 % of a shard's serialisation at
#: 5,000 buildings); the wave DAGs, which operators trigger, keep the dropdown and pass it as conf
TRIGGER_DOC = """
**Trigger** with run configuration `{"pass_kind": "prestage"}` (or `delta`, `final`, `drain`);
without one the pass is `prestage`. Operators normally trigger the wave DAG, which passes it.
"""

DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "on_failure_callback": task_failure_alert,
}


class BuildingProven(Asset):
    """An Airflow Asset with a cheap hash.

    Airflow's `Asset.__hash__` JSON-dumps every field, and `DAG.__hash__` hashes the schedule on
    every `>>` inside the DAG; a domain's cutover DAG is scheduled on ~100 building assets, so
    building the cutover DAGs of 5,000 buildings took 16 s, all of it in those hashes. Equal
    assets have equal name and URI, so hashing those two keeps hash and equality consistent.
    """

    def __hash__(self):
        return hash((self.name, self.uri))


def building_asset(building_id: str) -> Asset:
    """The event 'this building is proven', which its domain's cutover DAG waits for."""
    return BuildingProven(f"mailshift://building/{building_id}/proven", group="mailshift-building")


def _connect():
    from mailshift.store import db

    return db.connect(database_url())


def _label(addresses: list[str]) -> str:
    return addresses[0] if len(addresses) == 1 else f"{addresses[0]} (+{len(addresses) - 1})"


def mailbox_batches(mailboxes, size: int = BATCH_SIZE) -> list[dict]:
    """Split a building's mailboxes into batches, each with a label for the Airflow UI."""
    out = []
    for start in range(0, len(mailboxes), size):
        chunk = mailboxes[start:start + size]
        out.append({"label": _label([m.address for m in chunk]), "mailbox_ids": [m.id for m in chunk]})
    return out


@task(task_id="preflight")
@fail_fast()
def preflight(building_id: str) -> dict:
    """Log in at both sides for every mailbox; each problem becomes an exception (copy.preflight)."""
    from mailshift.copy.preflight import preflight_building

    conn = _connect()
    try:
        results = preflight_building(conn, building_id, endpoint, DEST_CONN_ID)
    finally:
        conn.close()
    bad = [r.address for r in results if not r.ok]
    print(f"preflight: {len(results) - len(bad)}/{len(results)} mailboxes ready; problems: {bad or 'none'}")
    return {"mailboxes": len(results), "problems": len(bad)}


@task(task_id="copy", map_index_template="{{ batch_label }}")
@fail_fast()
def copy_batch(batch: dict) -> dict:
    """One pass over a batch of mailboxes. Refused logins, unproven identities and missing
    passwords fail the task without retry after the rest of the batch is done, other deliberate
    failures at once (`failfast`); connection trouble raises and Airflow retries with backoff."""
    from mailshift.copy.copy_one import copy_mailboxes

    context = get_current_context()
    context["batch_label"] = batch["label"]
    pass_kind = requested_pass(context["dag_run"].conf)
    conn = _connect()
    try:
        result = copy_mailboxes(conn, batch["mailbox_ids"], pass_kind, resolve=endpoint, dest_conn_id=DEST_CONN_ID)
    finally:
        conn.close()
    for s in result.summaries:
        print(f"{s.mailbox}: {pass_kind} copied {s.copied}, already {s.already}, refused {s.refused}, "
              f"flags {s.flags_synced}, expunged at source {s.expunged_at_source}")
    if result.refused_logins:
        from mailshift.cli.errors import AUTH

        raise not_retried(f"{len(result.refused_logins)} mailbox(es) not copied, login refused or identity not "
                          "proven: " + "; ".join(result.refused_logins), "AuthError", AUTH)
    return result.totals


@task(task_id="verify_open", trigger_rule="all_done")
@fail_fast()
def verify_open(building_id: str, kind: str = "pre_cutover") -> int:
    """Open the building's verify run; its mailbox batches are verified in parallel (mapped)."""
    from mailshift.verify.core import open_building_run

    with closing(_connect()) as conn:
        return open_building_run(conn, building_id, kind)


def verify_part_fn(batch: dict, kind: str = "pre_cutover") -> dict:
    """One batch of verify work: groups of mailboxes, each in its building's open verify run
    (`verify_run_id`), each with its mode (`full`, or `sample` with `sample_rate`). Returns per
    building {"verified": n, "errors": {mailbox id: error}} (addresses stay out of XCom)."""
    from mailshift.verify.core import building_mailboxes, verify_batch

    get_current_context()["batch_label"] = batch.get("label", "")
    out: dict[str, dict] = {}
    with closing(_connect()) as conn:
        for g in batch.get("groups", []):
            wanted = set(g["mailbox_ids"])
            mailboxes = [(mid, a) for mid, a in building_mailboxes(conn, g["building_id"]) if mid in wanted]
            verdicts, errors = verify_batch(conn, g["verify_run_id"], mailboxes, endpoint, g.get("mode", "full"),
                                            dest_conn_id=DEST_CONN_ID, kind=kind,
                                            sample_rate=float(g.get("sample_rate", 0.02)))
            by_address = {a: mid for mid, a in mailboxes}
            part = out.setdefault(g["building_id"], {"verified": 0, "errors": {}})
            part["verified"] += len(verdicts)
            part["errors"].update({str(by_address[a]): e for a, e in errors.items()})
    return out


@task(task_id="verify", map_index_template="{{ batch_label }}")
@fail_fast()
def verify_part(batch: dict) -> dict:
    """Re-read both servers for a batch of the building's mailboxes (in the source system's pool)."""
    return verify_part_fn(batch)


def verify_close_fn(building_id: str, run_id: int, parts, started: float | None = None) -> dict:
    """GX suite, report and verdict of a building's (mapped) verify run; addresses stay out of XCom."""
    import time

    from mailshift.rules.proof import proof_states
    from mailshift.verify.core import building_mailboxes, close_building_run

    mine = [p[building_id] for p in (parts or []) if p and building_id in p]
    with closing(_connect()) as conn:
        mailboxes = building_mailboxes(conn, building_id)
        address = dict(mailboxes)
        errors = {address.get(int(mid), mid): e for p in mine for mid, e in (p.get("errors") or {}).items()}
        missing = len(mailboxes) - sum(int(p.get("verified", 0)) for p in mine) - len(errors)
        if missing > 0:
            errors["(unverified)"] = f"{missing} mailbox(es) of the building were not verified (a batch failed)"
        v = close_building_run(conn, building_id, run_id, [], errors, started or time.monotonic(),
                               mailboxes=len(mailboxes), dsn=database_url())
        states = proof_states(conn, building=building_id)
    failed = [r.get("expectation_config", {}).get("type", "?") for r in v.gx_result.get("results", [])
              if not r.get("success")]
    not_proven = [m.address for m in states if m.state not in PROOF_OK] + list(errors)
    proven = v.gx_success and not errors and not not_proven
    print(f"building {building_id}: {len(states) - len(not_proven)}/{len(states)} mailboxes proven; "
          f"expectations {'passed' if v.gx_success else 'FAILED: ' + ', '.join(failed)}; report {v.report_path}")
    return {"proven": proven, "mailboxes": len(states), "not_proven": len(not_proven),
            "failed_expectations": failed, "report": v.report_path, "verify_run_id": v.verify_run_id}


@task(task_id="verify_batches")
@fail_fast()
def verify_groups(batches: list[dict], building_id: str, verify_run: int) -> list[dict]:
    """The copy batches as verify batches of the building's open run (the run id is known only now)."""
    return [{"label": b["label"], "groups": [{"building_id": building_id, "verify_run_id": verify_run,
                                               "mailbox_ids": b["mailbox_ids"]}]} for b in batches]


@task(task_id="verify_close", trigger_rule="all_done")
@fail_fast()
def verify_close(building_id: str, verify_run: int, parts) -> dict:
    """Independent recount done: expectations, proof states and the HTML report of the building."""
    return verify_close_fn(building_id, verify_run, parts)


@task(task_id="mark_proven")
def mark_proven(building_id: str, verdict: dict) -> dict:
    """Only a building whose every mailbox is proven (or waived) emits its Asset event. A failed
    proof pages once: the proof alert (mailboxes, findings, links, next step) is posted under
    this task's problem key, so the failure callback of this task stays silent."""
    if not verdict.get("proven"):
        from mailshift.airflow.callbacks import post, proof_failed_alert

        ti = get_current_context()["ti"]
        post(proof_failed_alert(building_id, verdict, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                                map_index=getattr(ti, "map_index", -1)))
        raise AirflowFailException(
            f"building {building_id} is NOT proven: {verdict.get('not_proven')} mailbox(es) not proven "
            "(the Slack alert and the building page name them and the next step)")
    return verdict


def requested_pass(conf: dict | None) -> str:
    """The pass named in the run's conf (default prestage); a wrong name fails without retry."""
    kind = (conf or {}).get("pass_kind") or DEFAULT_PASS
    if kind not in PASS_KINDS:
        raise AirflowFailException(f"run conf pass_kind={kind!r}: expected one of {', '.join(PASS_KINDS)}")
    return kind


def copy_queue(building) -> str:
    """Celery queue of a building's copy tasks: its source system's pool name (`src_<system>`), so
    the workers that copy from one legacy server can be placed and scaled per server
    (CeleryExecutor; other executors ignore queues). MAILSHIFT_COPY_QUEUE=<name> puts every copy
    task on that one queue instead (e.g. `default` when all workers serve everything)."""
    return settings.get(settings.COPY_QUEUE) or building.pool


def building_dag_id(building_id: str) -> str:
    return f"mailshift_building_{building_id}"


def build_building_dag(building) -> DAG:
    """The DAG of one building from its snapshot entry (`SnapshotBuilding`)."""
    bid = building.id
    with DAG(
        dag_id=building_dag_id(bid),
        description=f"{building.name} ({building.domain}, {building.source_system})",
        schedule=None,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mailshift", "building", f"wave-{building.wave}", building.source_system, building.domain],
        doc_md=__doc__ + TRIGGER_DOC,
    ) as dag:
        pre = preflight(bid)
        copies = copy_batch.override(pool=building.pool, queue=copy_queue(building)).expand(batch=mailbox_batches(building.mailboxes))
        run = verify_open(bid)
        batches = mailbox_batches(building.mailboxes)
        parts = verify_part.override(pool=building.pool, queue=copy_queue(building)).expand(
            batch=verify_groups(batches, bid, run))
        verdict = verify_close.override(trigger_rule="all_done")(bid, run, parts)
        mark_proven.override(outlets=[building_asset(bid)])(bid, verdict)
        pre >> copies >> run
    return dag
