"""One function per step of a domain's cutover DAG (plain Python; the DAG wraps each in a task).

    check_ttl_step -> gate_step -> [human approval] -> final_pass_step -> reverify_step
    -> swap_step (evaluates the gate again itself) -> drain_step -> final_proof_step

Every step reads its starting point from the database and DNS, never from XCom, and is safe to
re-run: once the MX swap is recorded as applied, the pre-swap steps return
`{"skipped": ...}` instead of acting, and `swap_step` recognises the applied swap and only
re-verifies it. A refusal raises (TtlNotReady, GateBlocked, PrerequisiteMismatch,
FinalProofFailed) after posting to Slack through `notify(Message)` when given.
`abort_step` before the swap changes nothing in DNS or in any mailbox (nothing was written there
before the swap); it closes planned swap records and says so.

The gate (`gate_step`, and `swap_step` right before writing) is `mailshift.cutover.gate` with its
default notice condition: the same from the CLI and from Airflow. `notice_check` is there for
tests only. SQL is in `mailshift.store` (`cutover`, `dns_changes`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from mailshift.cutover import messages
from mailshift.cutover.drain import CopyFn, DrainResult, drain_domain
from mailshift.cutover.gate import NoticeCheck, evaluate_gate
from mailshift.cutover.swap import GateBlocked, SwapResult, swap_mx
from mailshift.cutover.ttl import TtlNotReady, check_ttl
from mailshift.errors import FinalProofFailed, SwapAlreadyApplied  # noqa: F401  (raised here)
from mailshift.protocols.dns import DnsProvider, PrerequisiteMismatch
from mailshift.store import dns_changes as records
from mailshift.store.cutover import domain_buildings, domain_mailboxes

Notify = Callable[[messages.Message], object]
VerifyFn = Callable[..., object]      # (conn, building_id, kind=...) -> BuildingVerdict-like (report_path)


def default_copy(conn, mailbox_id: int, pass_kind: str):
    """The copier with the endpoints from the environment (the CLI's; the DAG passes its own)."""
    from mailshift.copy.copy_one import copy_one

    return copy_one(conn, mailbox_id, pass_kind)


def default_verify(conn, building_id: str, kind: str = "pre_cutover"):
    """The verifier with the endpoints from the environment (the CLI's; the DAG passes its own)."""
    from mailshift.verify import verify_building

    return verify_building(conn, building_id, kind=kind)


def _send(notify: Notify | None, msg) -> None:
    if notify is not None:
        notify(msg)


def swap_applied(conn, domain: str) -> records.DnsChange | None:
    """The applied MX swap of the domain, if any: after it, pre-swap steps must not act."""
    return records.latest(conn, domain, "mx_swap")


def _skip(conn, domain: str) -> dict | None:
    ch = swap_applied(conn, domain)
    if ch is not None:
        return {"skipped": f"MX swap already applied (dns_change #{ch.id}, {ch.status})", "change_id": ch.id}
    return None


# -- steps -------------------------------------------------------------------------------------
def check_ttl_step(conn, provider: DnsProvider, domain: str, *, zone: str | None = None,
                   now: dt.datetime | None = None, notify: Notify | None = None) -> dict:
    """Refuse the cutover until every name server serves the lowered TTL and the old one expired."""
    if (s := _skip(conn, domain)) is not None:
        return s
    c = check_ttl(conn, provider, domain, zone=zone, now=now)
    if not c.ok:
        _send(notify, messages.ttl_not_ready(domain, c.reasons))
        raise TtlNotReady(domain, c.reasons)
    return {"ok": True, "change_id": c.change_id, "old_ttl": c.old_ttl, "new_ttl": c.new_ttl, "mx": list(c.mx),
            "expired_at": c.expires_at.isoformat(), "servers": c.answers}


def gate_step(conn, domain: str, *, notice_check: NoticeCheck | None = None, notify: Notify | None = None) -> dict:
    """The zero-loss gate before anyone is asked to approve; its summary goes into the approval."""
    if (s := _skip(conn, domain)) is not None:
        return s
    v = evaluate_gate(conn, domain, notice_check)
    if not v.passed:
        _send(notify, messages.gate_blocked(domain, v.reason_texts()))
        raise GateBlocked(v)
    return {**v.as_dict(), "approval_text": messages.approval_text(domain, v.summary)}


def final_pass_step(conn, domain: str, copy_fn: CopyFn = default_copy) -> dict:
    """The `final` pass over every mailbox right before the swap."""
    if (s := _skip(conn, domain)) is not None:
        return s
    out = {"mailboxes": 0, "copied": 0, "failed": 0, "refused": 0}
    for mid, _address in domain_mailboxes(conn, domain):
        r = copy_fn(conn, mid, "final")
        out["mailboxes"] += 1
        for k in ("copied", "failed", "refused"):
            out[k] += int(getattr(r, k, 0) or 0)
    return out


def reverify_step(conn, domain: str, verify_fn: VerifyFn = default_verify) -> dict:
    """Verification after the final pass (proof kind pre_cutover): the swap's gate reads it."""
    if (s := _skip(conn, domain)) is not None:
        return s
    reports = [str(getattr(verify_fn(conn, b, kind="pre_cutover"), "report_path", "") or "")
               for b in domain_buildings(conn, domain)]
    return {"buildings": len(reports), "reports": [r for r in reports if r]}


def swap_step(conn, provider: DnsProvider, domain: str, new_mx: Iterable[str], *, approved_by: str,
              approved_at=None, expected_old: Iterable[str] | None = None, requested_by: str | None = None,
              notice_check: NoticeCheck | None = None, notify: Notify | None = None, zone: str | None = None,
              timeout: float = 300.0, interval: float = 2.0) -> dict:
    """The one-shot MX swap (gate evaluated again right before writing); posts what happened."""
    try:
        r: SwapResult = swap_mx(conn, provider, domain, new_mx, approved_by=approved_by, approved_at=approved_at,
                                expected_old=expected_old, requested_by=requested_by, notice_check=notice_check,
                                zone=zone, timeout=timeout, interval=interval)
    except GateBlocked as exc:
        _send(notify, messages.gate_blocked(domain, exc.verdict.reason_texts()))
        raise
    except PrerequisiteMismatch as exc:
        _send(notify, messages.swap_prerequisite_failed(domain, exc.expected, exc.found))
        raise
    if not r.already_applied:
        _send(notify, messages.swap_done(domain, list(r.old_rdata), list(r.new_rdata), approved_by,
                                         len(r.verification), r.serial))
    return {"change_id": r.change_id, "already_applied": r.already_applied, "old": list(r.old_rdata),
            "new": list(r.new_rdata), "ttl": r.ttl, "serial": r.serial, "servers": r.verification}


def drain_step(conn, domain: str, copy_fn: CopyFn = default_copy, *, quiet_seconds: float | None = None,
               poll_seconds: float = 60.0, max_seconds: float | None = None, log=None,
               mailbox_ids: list[int] | None = None, changed=None) -> dict:
    """Keep copying from the old server after the swap until it has been quiet (late mail);
    `mailbox_ids`: one batch of the domain; `changed`: a cheap check (drain.StatusProbe)."""
    r: DrainResult = drain_domain(conn, domain, copy_fn, quiet_seconds=quiet_seconds, poll_seconds=poll_seconds,
                                  max_seconds=max_seconds, log=log, mailbox_ids=mailbox_ids, changed=changed)
    return dict(r.__dict__)


def final_proof_step(conn, domain: str, verify_fn: VerifyFn | None = default_verify, *,
                     notify: Notify | None = None, drained: int = 0,
                     report_url: Callable[[str], str] | None = None, reports: list[str] | None = None,
                     guarantee: dict | None = None) -> dict:
    """Verify every building (proof kind final) - or, `verify_fn=None`, take the `reports` of a
    verification already done (the DAG's mapped one) - then require every mailbox's latest proof
    to be a passing final one (waivers count), no open exception. Posts the summary with the
    report link(s) and, for an incremental proof, `guarantee`: which guarantee covers how many."""
    reports = [report_url(r) if report_url else r for r in (reports or []) if r]
    for b in domain_buildings(conn, domain) if verify_fn is not None else []:
        path = str(getattr(verify_fn(conn, b, kind="final"), "report_path", "") or "")
        if path:
            reports.append(report_url(path) if report_url else path)
    v = evaluate_gate(conn, domain, notice_check=lambda _c, _d: [], proof_kind="final")
    s = v.summary
    _send(notify, messages.cutover_finished(domain, v.passed, s.get("mailboxes", 0), s.get("messages", 0),
                                            s.get("bytes", 0), drained, len(s.get("waivers", [])),
                                            v.reason_texts() + messages.guarantee_lines(guarantee), reports))
    if not v.passed:
        raise FinalProofFailed(v)
    return {**v.as_dict(), "reports": reports, "guarantee": guarantee or {}}


def abort_step(conn, domain: str, *, by: str, reason: str, notify: Notify | None = None) -> dict:
    """Abort before the swap (approval rejected, gate refused for good, ...). Writes nothing to DNS
    or any mailbox; marks planned swap records failed. Refused once the swap is applied."""
    ch = swap_applied(conn, domain)
    if ch is not None:
        raise SwapAlreadyApplied(f"the MX of {domain} was swapped (dns_change #{ch.id}): there is no rollback; "
                                 "continue with the drain")
    closed = records.fail_planned(conn, domain, "mx_swap", f"aborted by {by}: {reason}")
    _send(notify, messages.aborted(domain, by, reason))
    return {"aborted": True, "by": by, "reason": reason, "closed_changes": closed}


# -- the same steps as mapped work over mailbox batches (the DAG; issue #14) ----------------------
#: mailboxes per mapped task: ~4 min of a final pass at ~1.2 s a mailbox; raised when a source
#: system has more mailboxes than max_batches x this (Airflow's [core] max_map_length)
BATCH_MAILBOXES = 200
NONE_BATCH = {"label": "(no mailbox of this source system)", "mailboxes": 0, "groups": []}


def plan_batches(conn, domain: str, pool_of: Callable[[str], str], pool: str, *, size: int = BATCH_MAILBOXES,
                 max_batches: int = 1000, modes: dict | None = None, sample_rate: float = 0.02) -> list[dict]:
    """The batches (`batch_rows`) of the domain's mailboxes whose source system's pool is `pool`."""
    from mailshift.store.cutover import domain_mailbox_sources

    rows = [(mid, building) for mid, building, system in domain_mailbox_sources(conn, domain) if pool_of(system) == pool]
    return batch_rows(rows, size=size, max_batches=max_batches, modes=modes, sample_rate=sample_rate)


def batch_rows(rows: list[tuple[int, str]], *, size: int = BATCH_MAILBOXES, max_batches: int = 1000,
               modes: dict | None = None, sample_rate: float = 0.02) -> list[dict]:
    """(mailbox id, building) rows, in building order, as ceil(len / size) batches of at most `size`
    mailboxes (more only past `max_batches`: Airflow caps a map), or one empty batch when there are
    none, so every mapped task runs and trigger rules stay plain. A batch is {"label", "mailboxes",
    "groups": [{"building_id", "mailbox_ids", "mode", "sample_rate", "verify_run_id"}]}: groups
    never cross a building (one verify run each)."""
    n = max(size, -(-len(rows) // max_batches))
    batches = []
    for start in range(0, len(rows), n):
        chunk = rows[start:start + n]
        groups: dict[tuple, dict] = {}
        for mid, building in chunk:
            mode = (modes or {}).get(mid, "full")
            g = groups.setdefault((building, mode), {"building_id": building, "mailbox_ids": [], "mode": mode,
                                                     "sample_rate": sample_rate, "verify_run_id": None})
            g["mailbox_ids"].append(mid)
        batches.append({"label": f"{chunk[0][1]} .. {chunk[-1][1]} ({len(chunk)} mailboxes)",
                        "mailboxes": len(chunk), "groups": list(groups.values())})
    return batches or [dict(NONE_BATCH)]


def attach_verify_runs(conn, batches: list[dict], kind: str) -> dict:
    """Open one verify run per building of the batches and write its id into their groups: {building: run}."""
    from mailshift.verify.core import open_building_run

    runs: dict[str, int] = {}
    for batch in batches:
        for g in batch["groups"]:
            if g["building_id"] not in runs:
                runs[g["building_id"]] = open_building_run(conn, g["building_id"], kind)
            g["verify_run_id"] = runs[g["building_id"]]
    return runs


def close_chunks(batches: list[dict], parts: list[dict], max_tasks: int = 1000) -> list[dict]:
    """The closing work (GX suite + report per building verify run) of a mapped verification:
    one item per building - ceil(buildings / max_tasks) past `max_tasks` - each {"close":
    [[building, run], ...], "merged": {building: {verified, errors}}} with the merged counts of
    the `parts` (the mapped verify tasks' results). A close costs what one building costs,
    whatever the size of the domain. One empty item when nothing is to close (the map still runs)."""
    runs = {g["building_id"]: g["verify_run_id"] for b in batches for g in b.get("groups", [])
            if g.get("verify_run_id") is not None}
    merged: dict[str, dict] = {}
    for part in parts or []:
        for b, p in (part or {}).items():
            m = merged.setdefault(b, {"verified": 0, "errors": {}})
            m["verified"] += int(p.get("verified", 0))
            m["errors"].update(p.get("errors") or {})
    order = sorted(runs.items())
    n = max(1, -(-len(order) // max_tasks))
    out = [{"close": [[b, r] for b, r in order[i:i + n]],
            "merged": {b: merged.get(b, {"verified": 0, "errors": {}}) for b, _r in order[i:i + n]}}
           for i in range(0, len(order), n)]
    return out or [{"close": [], "merged": {}}]


def final_pass_batch(conn, domain: str, batch: dict, copy_fn: CopyFn = default_copy) -> dict:
    """The `final` pass over one batch of the domain's mailboxes (skipped once the MX is swapped)."""
    if (s := _skip(conn, domain)) is not None:
        return s
    return _copy_batch(conn, batch, copy_fn, "final")


def _copy_batch(conn, batch: dict, copy_fn: CopyFn, kind: str) -> dict:
    out = {"mailboxes": 0, "copied": 0, "failed": 0, "refused": 0, "bytes": 0}
    for g in batch.get("groups", []):
        for mid in g["mailbox_ids"]:
            r = copy_fn(conn, mid, kind)
            out["mailboxes"] += 1
            for k in ("copied", "failed", "refused", "bytes"):
                out[k] += int(getattr(r, k, 0) or 0)
    return out


def final_proof_modes(conn, domain: str, sample_rate: float) -> tuple[dict, dict]:
    """The incremental final proof: ({mailbox id: "full" | "sample"}, what is guaranteed how).

    A mailbox whose ledger changed since its latest proof - the pre-cutover one, or a final one
    of an earlier run - (the drain copied something, or it was never proven, or that proof
    failed) is re-read in full; the others are covered by the ledger (unchanged since that proof)
    plus a re-read of `sample_rate` of their messages."""
    from mailshift.store.proofs import mailbox_facts

    modes, full_msgs, sample_msgs = {}, 0, 0
    for f in mailbox_facts(conn, domain=domain):
        changed = (f.proof_id is None or f.verdict == "failed"
                   or (f.ledger_now is not None and (f.ledger_as_of is None or f.ledger_now > f.ledger_as_of)))
        modes[f.mailbox_id] = "full" if changed or sample_rate >= 1 else "sample"
        if modes[f.mailbox_id] == "full":
            full_msgs += f.src_messages or 0
        else:
            sample_msgs += f.src_messages or 0
    full_n = sum(1 for m in modes.values() if m == "full")
    return modes, {"sample_rate": sample_rate, "mailboxes_reread_in_full": full_n,
                   "mailboxes_ledger_plus_sample": len(modes) - full_n,
                   "messages_in_reread_mailboxes_at_last_proof": full_msgs,
                   "messages_ledger_plus_sample": sample_msgs}
