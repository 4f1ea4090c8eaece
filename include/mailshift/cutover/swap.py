"""The MX swap: once, after the gate, with a person's approval, never a blind overwrite.

`swap_mx` evaluates the gate itself right before writing (there is no parameter that skips it),
checks that the primary serves exactly the expected old MX RRset, records the change (who
approved, old and new records, times) in `dns_change`, sends one RFC 2136 UPDATE whose
prerequisite is that old RRset, and then waits until every authoritative server serves the new
MX and a SOA serial at or after the primary's serial after the update.

Idempotent: a swap to the same new records that is recorded `applied`/`verified` and served by
the primary is recognised and only (re-)verified, never sent again; a `planned` row left by a
crash is resolved by reading the zone (served new -> applied; served old -> the same row is
used for the attempt).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mailshift.cutover.gate import NoticeCheck, evaluate_gate
from mailshift.errors import GateBlocked, SwapInconsistent  # noqa: F401  (raised here)
from mailshift.protocols.dns import (
    DnsError,
    DnsProvider,
    NotServed,
    PrerequisiteMismatch,
    canonical,
    wait_until_served,
)
from mailshift.store import dns_changes as records


@dataclass
class SwapResult:
    change_id: int
    domain: str
    status: str                    # applied | verified
    already_applied: bool
    old_rdata: tuple[str, ...]
    new_rdata: tuple[str, ...]
    ttl: int | None
    serial: int | None
    verification: dict = field(default_factory=dict)


def expected_old_mx(conn, domain: str) -> tuple[str, ...] | None:
    """The MX recorded by the latest applied TTL lowering: what the swap expects to replace."""
    ch = records.latest(conn, domain, "lower_ttl")
    return ch.new_rdata if ch else None


def swap_mx(conn, provider: DnsProvider, domain: str, new_rdata: Iterable[str], *, approved_by: str,
            approved_at=None, expected_old: Iterable[str] | None = None, requested_by: str | None = None,
            notice_check: NoticeCheck | None = None, zone: str | None = None, timeout: float = 120.0,
            interval: float = 1.0) -> SwapResult:
    if not approved_by or not approved_by.strip():
        raise ValueError("the MX swap needs the name of the person who approved it")
    zone = zone or domain
    new = canonical(new_rdata, "MX", zone)
    if not new:
        raise ValueError("the new MX RRset is empty")
    with records.DomainLock(conn, domain):
        # 1. already applied (a re-run after a crash or a retry): never swap twice
        done = records.latest(conn, domain, "mx_swap", ("planned", "applied", "verified"), new_rdata=new)
        if done is not None:
            served = provider.get_rrset(zone, domain)
            if done.status in ("applied", "verified"):
                if served.rdatas != new:
                    raise SwapInconsistent(
                        f"dns_change #{done.id} records the swap of {domain} to {list(new)} as {done.status}, but "
                        f"the primary serves {list(served.rdatas)}: not swapping again; a person must look")
                return _verify(conn, provider, done, zone, domain, served.ttl, timeout, interval, already=True)
            if served.rdatas == new:   # planned, but the UPDATE went through before a crash
                records.mark(conn, done.id, "applied", detail="UPDATE found applied when the step was re-run")
                return _verify(conn, provider, records.get(conn, done.id), zone, domain, served.ttl, timeout,
                               interval, already=True)
        # 2. what the swap replaces
        old = canonical(expected_old, "MX", zone) if expected_old is not None else expected_old_mx(conn, domain)
        if not old:
            raise ValueError(f"no expected old MX for {domain}: pass expected_old or record the TTL lowering first")
        current = provider.get_rrset(zone, domain)
        if current.rdatas != old:
            exc = PrerequisiteMismatch(domain, list(old), list(current.rdatas), "read before the update")
            records.insert(conn, domain, "mx_swap", old_rdata=old, new_rdata=new, old_ttl=current.ttl,
                           new_ttl=current.ttl, provider=provider.name, requested_by=requested_by,
                           approved_by=approved_by, approved_at=approved_at, status="failed", detail=str(exc))
            raise exc
        # 3. the gate, right before writing
        verdict = evaluate_gate(conn, domain, notice_check)
        if not verdict.passed:
            raise GateBlocked(verdict)
        # 4. record, then write once with the prerequisite
        if done is not None and done.status == "planned":
            cid = done.id
        else:
            cid = records.insert(conn, domain, "mx_swap", old_rdata=old, new_rdata=new, old_ttl=current.ttl,
                                 new_ttl=current.ttl, provider=provider.name, requested_by=requested_by,
                                 approved_by=approved_by, approved_at=approved_at,
                                 detail=f"gate passed: {verdict.summary.get('mailboxes')} mailboxes, "
                                        f"{len(verdict.summary.get('waivers', []))} active waivers")
        try:
            provider.replace_rrset(zone, domain, old, new, current.ttl)
        except PrerequisiteMismatch as exc:
            records.mark(conn, cid, "failed", detail=str(exc))
            raise
        except DnsError as exc:
            if provider.get_rrset(zone, domain).rdatas != new:
                records.mark(conn, cid, "failed", detail=str(exc))
                raise
        records.mark(conn, cid, "applied")
        return _verify(conn, provider, records.get(conn, cid), zone, domain, current.ttl, timeout, interval,
                       already=False)


def _verify(conn, provider, ch: records.DnsChange, zone, domain, ttl, timeout, interval, *, already) -> SwapResult:
    serial = provider.serial(zone) if hasattr(provider, "serial") else None
    try:
        check = wait_until_served(provider, zone, domain, ch.new_rdata, ttl=None, serial=serial, timeout=timeout,
                                  interval=interval)
    except NotServed as exc:
        records.mark(conn, ch.id, "applied", detail=str(exc), verification={"serial": serial, "servers": exc.answers})
        raise
    records.mark(conn, ch.id, "verified", verification={"serial": serial, "servers": check.answers})
    return SwapResult(ch.id, domain, "verified", already, ch.old_rdata, ch.new_rdata, ttl, serial, check.answers)
