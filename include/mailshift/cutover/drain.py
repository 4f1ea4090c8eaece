"""Drain: after the MX swap, keep copying from the old server until it has been quiet.

Mail can still reach the old server while resolvers hold the old MX (up to its TTL) and while
senders retry. `drain_domain` runs `drain` passes over every mailbox of the domain, round after
round, until no pass has copied a new message for `quiet_seconds` (default: 2 x the TTL the old
MX had when it was swapped, from `dns_change`). Every drained message goes through the ledger
like any other (the copier), and the final proof covers it.

Restartable: a re-run starts the quiet window again (conservative); the ledger makes the
copies exactly-once.

Cheap change detection (`StatusProbe`): a round asks the old server for STATUS (UIDVALIDITY,
UIDNEXT, MESSAGES) of every folder of a mailbox - one login and a few short commands - and runs
a `drain` pass only on a mailbox whose folders hold a UID the ledger has not seen, or whose
STATUS changed since the probe last looked. A quiet mailbox never gets a pass. `mailbox_ids=`
limits a drain to one batch of the domain (the DAG maps the drain over batches).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailshift.errors import NotSwapped  # noqa: F401  (raised here)
from mailshift.store import dns_changes as records
from mailshift.store.cutover import domain_mailboxes, ledger_uid_marks

CopyFn = Callable[[object, int, str], object]   # (conn, mailbox_id, pass_kind) -> PassSummary
ChangedFn = Callable[[object, int], bool]       # (conn, mailbox_id) -> may hold mail not in the ledger


class StatusProbe:
    """Has a mailbox new mail at the old server? STATUS of every folder against the ledger.

    True when a folder's UIDVALIDITY is unknown to the ledger or its UIDNEXT is above the highest
    source UID the ledger holds + 1 - unless the probe saw exactly this STATUS after the last pass
    (a deleted newest message leaves UIDNEXT ahead for good: one pass, then quiet). Errors answer
    True (the copier then reports them)."""

    def __init__(self, resolve):
        self.resolve = resolve
        self.after_pass: dict[int, tuple] = {}
        self.probes = 0

    def status(self, conn, mailbox_id: int) -> tuple:
        from mailshift.copy.copy_one import mailbox_context
        from mailshift.protocols.imap.session import close_session, open_session

        ctx = mailbox_context(conn, mailbox_id)
        client = open_session(self.resolve(ctx.source_conn_id), ctx.mailbox.source_login)
        try:
            out = []
            for _flags, _delim, name in client.list_folders():
                name = name.decode() if isinstance(name, bytes) else name
                try:
                    st = client.folder_status(name, ["UIDVALIDITY", "UIDNEXT", "MESSAGES"])
                except Exception:  # noqa: BLE001 - \Noselect and the like: nothing to copy there
                    continue
                out.append((name, int(st[b"UIDVALIDITY"]), int(st[b"UIDNEXT"]), int(st[b"MESSAGES"])))
        finally:
            close_session(client)
        self.probes += 1
        return tuple(sorted(out))

    def __call__(self, conn, mailbox_id: int) -> bool:
        try:
            status = self.status(conn, mailbox_id)
        except Exception:  # noqa: BLE001 - let the pass meet (and report) the problem
            return True
        if self.after_pass.get(mailbox_id) == status:
            return False
        marks = ledger_uid_marks(conn, mailbox_id)
        return any(messages and (name, uv) not in marks or uidnext > marks.get((name, uv), 0) + 1
                   for name, uv, uidnext, messages in status)

    def passed(self, conn, mailbox_id: int) -> None:
        """Remember the STATUS right after a pass over the mailbox."""
        try:
            self.after_pass[mailbox_id] = self.status(conn, mailbox_id)
        except Exception:  # noqa: BLE001
            self.after_pass.pop(mailbox_id, None)


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
    checked: int = 0                # mailbox checks (STATUS probes) when a probe is used
    round_seconds: list = field(default_factory=list)  # duration of each round


def default_quiet_seconds(conn, domain: str, factor: float = 2.0) -> float:
    """factor x the old MX's TTL at the swap (recorded in dns_change)."""
    ch = records.latest(conn, domain, "mx_swap")
    if ch is None:
        raise NotSwapped(f"no applied MX swap is recorded for {domain}: nothing to drain yet")
    return factor * float(ch.old_ttl or 0)


def drain_domain(conn, domain: str, copy_fn: CopyFn, *, quiet_seconds: float | None = None,
                 poll_seconds: float = 60.0, max_seconds: float | None = None, require_swap: bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] | None = None, mailbox_ids: list[int] | None = None,
                 changed: ChangedFn | None = None) -> DrainResult:
    """Run drain rounds until no new message was copied for `quiet_seconds`; returns the counts.

    `max_seconds` (optional) bounds the whole drain: exceeding it raises TimeoutError (the old
    server keeps receiving mail: a person must look), never a silent stop. `changed` (e.g. a
    `StatusProbe`): a pass runs only on a mailbox it says may hold new mail."""
    if require_swap and records.latest(conn, domain, "mx_swap") is None:
        raise NotSwapped(f"no applied MX swap is recorded for {domain}: nothing to drain yet")
    if quiet_seconds is None:
        quiet_seconds = default_quiet_seconds(conn, domain)
    mailboxes = domain_mailboxes(conn, domain)
    if mailbox_ids is not None:
        wanted = set(mailbox_ids)
        mailboxes = [(mid, a) for mid, a in mailboxes if mid in wanted]
    res = DrainResult(domain, quiet_seconds=quiet_seconds)
    started = clock()
    last_new = started
    while True:
        res.rounds += 1
        new_this_round = 0
        round_started = clock()
        for mid, address in mailboxes:
            if changed is not None:
                res.checked += 1
                if not changed(conn, mid):
                    continue
            s = copy_fn(conn, mid, "drain")
            if hasattr(changed, "passed"):
                changed.passed(conn, mid)
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
        res.round_seconds.append(round(now - round_started, 3))
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
