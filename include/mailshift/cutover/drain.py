"""Drain: after the MX swap, keep copying from the old server until it has been quiet.

Mail can still reach the old server while resolvers hold the old MX (up to its TTL) and while
senders retry. `drain_domain` runs `drain` passes over every mailbox of the domain, round after
round, until no pass has copied a new message for `quiet_seconds` (default: 2 x the TTL the old
MX had when it was swapped, from `dns_change`). Every drained message goes through the ledger
like any other (the copier), and the final proof covers it.

Restartable: a re-run starts the quiet window again (conservative); the ledger makes the
copies exactly-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailshift.errors import NotSwapped  # noqa: F401  (raised here)
from mailshift.store import dns_changes as records
from mailshift.store.cutover import domain_mailboxes

CopyFn = Callable[[object, int, str], object]   # (conn, mailbox_id, pass_kind) -> PassSummary


@dataclass
class DrainResult:
    domain: str
    rounds: int = 0
    passes: int = 0
    copied: int = 0                 # new messages taken from the old server
    failed: int = 0                 # messages the copier could not copy (in the ledger; block the proof)
    refused: int = 0
    bytes: int = 0
    quiet_seconds: float = 0.0
    seconds: float = 0.0
    per_mailbox: dict = field(default_factory=dict)   # address -> copied


def default_quiet_seconds(conn, domain: str, factor: float = 2.0) -> float:
    """factor x the old MX's TTL at the swap (recorded in dns_change)."""
    ch = records.latest(conn, domain, "mx_swap")
    if ch is None:
        raise NotSwapped(f"no applied MX swap is recorded for {domain}: nothing to drain yet")
    return factor * float(ch.old_ttl or 0)


def drain_domain(conn, domain: str, copy_fn: CopyFn, *, quiet_seconds: float | None = None,
                 poll_seconds: float = 60.0, max_seconds: float | None = None, require_swap: bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] | None = None) -> DrainResult:
    """Run drain rounds until no new message was copied for `quiet_seconds`; returns the counts.

    `max_seconds` (optional) bounds the whole drain: exceeding it raises TimeoutError (the old
    server keeps receiving mail: a person must look), never a silent stop."""
    if require_swap and records.latest(conn, domain, "mx_swap") is None:
        raise NotSwapped(f"no applied MX swap is recorded for {domain}: nothing to drain yet")
    if quiet_seconds is None:
        quiet_seconds = default_quiet_seconds(conn, domain)
    mailboxes = domain_mailboxes(conn, domain)
    res = DrainResult(domain, quiet_seconds=quiet_seconds)
    started = clock()
    last_new = started
    while True:
        res.rounds += 1
        new_this_round = 0
        for mid, address in mailboxes:
            s = copy_fn(conn, mid, "drain")
            res.passes += 1
            n = int(getattr(s, "copied", 0) or 0)
            new_this_round += n
            res.copied += n
            res.failed += int(getattr(s, "failed", 0) or 0)
            res.refused += int(getattr(s, "refused", 0) or 0)
            res.bytes += int(getattr(s, "bytes", 0) or 0)
            if n:
                res.per_mailbox[address] = res.per_mailbox.get(address, 0) + n
        now = clock()
        if new_this_round:
            last_new = now
        if log:
            log(f"drain {domain} round {res.rounds}: {new_this_round} new, quiet for {now - last_new:.0f}"
                f"/{quiet_seconds:.0f} s")
        if now - last_new >= quiet_seconds:
            break
        if max_seconds is not None and now - started >= max_seconds:
            res.seconds = now - started
            raise TimeoutError(f"drain of {domain} still copying after {max_seconds:.0f} s "
                               f"({res.copied} messages so far): the old server keeps receiving mail")
        sleep(min(poll_seconds, max(0.0, quiet_seconds - (now - last_new))) or poll_seconds)
    res.seconds = clock() - started
    return res
