"""MX TTL: lower it days ahead (a recorded change), and check before the swap that every
authoritative server serves the lowered TTL and that the old TTL has expired since the change.

Resolvers may keep the old MX RRset for up to its old TTL after the lowering; only after
`applied_at + old_ttl` is every cached copy known to carry the lowered TTL, so the swap then
propagates within the lowered TTL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from mailshift.errors import TtlNotReady  # noqa: F401  (raised here)
from mailshift.protocols.dns import DnsError, DnsProvider, PrerequisiteMismatch, canonical, wait_until_served
from mailshift.store import dns_changes as records


@dataclass
class TtlCheck:
    domain: str
    ok: bool
    reasons: list[str] = field(default_factory=list)
    change_id: int | None = None
    old_ttl: int | None = None
    new_ttl: int | None = None
    mx: tuple[str, ...] = ()
    applied_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    answers: dict = field(default_factory=dict)


def change_ttl(conn, provider: DnsProvider, domain: str, new_ttl: int, *, requested_by: str,
               kind: str = "lower_ttl", zone: str | None = None, timeout: float = 60.0,
               interval: float = 1.0) -> records.DnsChange:
    """Set the MX RRset's TTL to `new_ttl`, records unchanged (prerequisite: exactly the records
    read a moment before). Recorded in dns_change (planned -> applied -> verified). Idempotent:
    when the TTL is already served and recorded, the recorded change is returned (re-verified)."""
    if kind not in ("lower_ttl", "restore_ttl"):
        raise ValueError(f"kind {kind!r}")
    if not requested_by or not requested_by.strip():
        raise ValueError("a TTL change needs the name of the person or DAG run requesting it")
    zone = zone or domain
    with records.DomainLock(conn, domain):
        cur_rr = provider.get_rrset(zone, domain)
        if not cur_rr.rdatas:
            raise DnsError(f"{domain} has no MX RRset at the primary: nothing to change")
        done = records.latest(conn, domain, kind, new_rdata=cur_rr.rdatas)
        if done is not None and cur_rr.ttl == new_ttl and done.new_ttl == new_ttl:
            if done.status == "applied":
                _verify(conn, provider, done.id, zone, domain, cur_rr.rdatas, new_ttl, timeout, interval)
            return records.get(conn, done.id)
        cid = records.insert(conn, domain, kind, old_rdata=cur_rr.rdatas, new_rdata=cur_rr.rdatas,
                             old_ttl=cur_rr.ttl, new_ttl=new_ttl, provider=provider.name,
                             requested_by=requested_by)
        try:
            provider.replace_rrset(zone, domain, cur_rr.rdatas, cur_rr.rdatas, new_ttl)
        except PrerequisiteMismatch as exc:
            records.mark(conn, cid, "failed", detail=str(exc))
            raise
        except DnsError as exc:
            after = provider.get_rrset(zone, domain)
            if not (after.rdatas == cur_rr.rdatas and after.ttl == new_ttl):
                records.mark(conn, cid, "failed", detail=str(exc))
                raise
        records.mark(conn, cid, "applied")
        _verify(conn, provider, cid, zone, domain, cur_rr.rdatas, new_ttl, timeout, interval)
        return records.get(conn, cid)


def lower_ttl(conn, provider: DnsProvider, domain: str, new_ttl: int, *, requested_by: str, **kw) -> records.DnsChange:
    """The separate, earlier DAG run: lower the MX TTL (days before the cutover)."""
    return change_ttl(conn, provider, domain, new_ttl, requested_by=requested_by, kind="lower_ttl", **kw)


def restore_ttl(conn, provider: DnsProvider, domain: str, ttl: int, *, requested_by: str, **kw) -> records.DnsChange:
    """After the cutover: raise the (new) MX's TTL back."""
    return change_ttl(conn, provider, domain, ttl, requested_by=requested_by, kind="restore_ttl", **kw)


def _verify(conn, provider, cid, zone, domain, rdatas, ttl, timeout, interval) -> None:
    serial = provider.serial(zone) if hasattr(provider, "serial") else None
    check = wait_until_served(provider, zone, domain, rdatas, ttl=ttl, serial=serial, timeout=timeout,
                              interval=interval)
    records.mark(conn, cid, "verified", verification={"serial": serial, "servers": check.answers})


def check_ttl(conn, provider: DnsProvider, domain: str, *, zone: str | None = None, now: dt.datetime | None = None,
              max_ttl: int | None = None) -> TtlCheck:
    """Does every authoritative server serve the lowered TTL (the latest recorded lower_ttl change,
    or at most `max_ttl`), with the MX recorded then, and has the old TTL expired since it was applied?"""
    zone = zone or domain
    out = TtlCheck(domain, False)
    ch = records.latest(conn, domain, "lower_ttl")
    if ch is None:
        out.reasons.append(f"no applied MX TTL lowering is recorded for {domain}: run the lower-TTL DAG first "
                           "(at least the old TTL before the cutover)")
        return out
    out.change_id, out.old_ttl, out.new_ttl, out.mx, out.applied_at = (
        ch.id, ch.old_ttl, ch.new_ttl, ch.new_rdata, ch.applied_at)
    limit = ch.new_ttl if max_ttl is None else min(ch.new_ttl, max_ttl)
    want = canonical(ch.new_rdata, "MX", zone)
    for s in provider.authoritative_servers(zone):
        try:
            seen = provider.query_server(s, zone, domain)
        except DnsError as exc:
            out.answers[s.label] = {"error": str(exc)}
            out.reasons.append(f"name server {s.label} did not answer: {exc}")
            continue
        out.answers[s.label] = seen.as_dict()
        if seen.ttl is None or seen.ttl > limit:
            out.reasons.append(f"name server {s.label} serves the MX with TTL {seen.ttl}, not the lowered {limit}")
        if seen.rdatas != want:
            out.reasons.append(f"name server {s.label} serves MX {list(seen.rdatas)}, not {list(want)} "
                               f"as recorded by TTL change #{ch.id}")
    now = now or records.db_now(conn)
    out.expires_at = ch.applied_at + dt.timedelta(seconds=ch.old_ttl or 0)
    if now < out.expires_at:
        out.reasons.append(f"the old TTL ({ch.old_ttl} s) has not expired since the lowering (change #{ch.id} "
                           f"applied {ch.applied_at:%Y-%m-%d %H:%M:%S %Z}): wait until "
                           f"{out.expires_at:%Y-%m-%d %H:%M:%S %Z} ({(out.expires_at - now).total_seconds():.0f} s)")
    out.ok = not out.reasons
    return out
