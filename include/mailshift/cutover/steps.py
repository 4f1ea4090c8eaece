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
    return v.as_dict()


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
               poll_seconds: float = 60.0, max_seconds: float | None = None, log=None) -> dict:
    """Keep copying from the old server after the swap until it has been quiet (late mail)."""
    r: DrainResult = drain_domain(conn, domain, copy_fn, quiet_seconds=quiet_seconds, poll_seconds=poll_seconds,
                                  max_seconds=max_seconds, log=log)
    return dict(r.__dict__)


def final_proof_step(conn, domain: str, verify_fn: VerifyFn = default_verify, *, notify: Notify | None = None,
                     drained: int = 0, report_url: Callable[[str], str] | None = None) -> dict:
    """Verify every building (proof kind final), then require every mailbox's latest proof to be a
    passing final one (waivers count), no open exception. Posts the summary with the report link(s)."""
    reports = []
    for b in domain_buildings(conn, domain):
        path = str(getattr(verify_fn(conn, b, kind="final"), "report_path", "") or "")
        if path:
            reports.append(report_url(path) if report_url else path)
    v = evaluate_gate(conn, domain, notice_check=lambda _c, _d: [], proof_kind="final")
    s = v.summary
    _send(notify, messages.cutover_finished(domain, v.passed, s.get("mailboxes", 0), s.get("messages", 0),
                                            s.get("bytes", 0), drained, len(s.get("waivers", [])),
                                            v.reason_texts(), reports))
    if not v.passed:
        raise FinalProofFailed(v)
    return {**v.as_dict(), "reports": reports}


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
