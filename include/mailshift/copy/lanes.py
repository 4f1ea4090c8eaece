"""Destination append lanes: the APPENDs of one mailbox over a few connections of their own.

Why: a destination stores each appended message (file, fsync, index) while the copier would
otherwise sit idle; measured in the lab, the copier spent 60 % of its wall time waiting for
MULTIAPPEND replies. With lanes, the copier reads, hashes and records the next batches while
the destination stores the previous ones, and different folders are stored in parallel.

Order is kept: the batches of one folder go to whichever lane is free, but each one commits
only after the batch before it in the same folder was answered (`multiappend_in_order`: its
literals are sent, and stored by the destination, while the earlier batch is still being
stored; the command ends later). So destination UIDs follow source UIDs within every folder: a
POP3 user's message order and an IMAP client's arrival order are unchanged.

A lane only talks IMAP. What the destination said goes back to the copier's thread, which
alone writes the ledger (see `MailboxCopier._settle`).

The copy-time check (reading every stored message back and comparing it byte for byte) runs on
a checker of its own (one more destination session, one thread), not on the lane: a lane hands
its answered batch over and appends the next one while the checker reads the stored copies
back. The copier records a batch only once its check is done, so nothing is `copied` unchecked.
Measured: on the lane the read-back sat on every batch's critical path (+25 % wall at one
process); see bench/README.md, "Copy".
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from imapclient import IMAPClient

from mailshift.errors import TransientError
from mailshift.protocols.endpoint import Endpoint
from mailshift.protocols.imap.append import (
    AppendOutcome,
    OutgoingMessage,
    append_one,
    classify_alteration,
    multiappend_in_order,
    read_back,
)
from mailshift.protocols.imap.session import close_session, open_session, translated_errors


@dataclass
class AppendJob:
    """One batch for one folder, and its place in the folder's order (`previous`, `done`)."""

    folder_key: int
    dest_folder: str
    messages: list[OutgoingMessage]
    limit: int | None
    context: dict = field(default_factory=dict)  # the copier's own bookkeeping, untouched here
    previous: AppendJob | None = None              # the batch before it in the same folder
    done: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    #: filled by the lane when stored copies are checked: message index -> (uid, class, evidence)
    altered: dict = field(default_factory=dict)
    checked: int = 0                               # messages read back and compared

    def wait_turn(self) -> None:
        """Block until the previous batch of the folder is answered; refuse to commit after it
        failed (its messages would be re-appended later, after this batch: out of order).
        Calling it again returns at once (or raises again)."""
        if self.previous is None:
            return
        self.previous.done.wait()
        if self.previous.failed:
            raise TransientError(f"folder {self.dest_folder!r}: the batch before this one failed; "
                                 "this one is not committed, to keep the folder's order")

    @property
    def bytes(self) -> int:
        return sum(len(m.data) for m in self.messages)


def append_batch(client: IMAPClient, folder: str, messages: list[OutgoingMessage],
                 limit: int | None, wait_turn=None) -> list[tuple[list[int], AppendOutcome]]:
    """Append a batch; returns groups of message indices with the destination's answer.

    Messages within the advertised APPENDLIMIT go in one MULTIAPPEND. RFC 3502 makes it all or
    nothing, so if the destination refuses it, each message is sent alone to find which one(s)
    it refuses and why. Messages over the limit go alone with a synchronizing literal, so the
    server can refuse before the bytes are sent. Nothing commits before `wait_turn()` returned.
    """
    turn = wait_turn or (lambda: None)
    big = [i for i, m in enumerate(messages) if limit is not None and len(m.data) > limit]
    big_set = set(big)
    small = [i for i in range(len(messages)) if i not in big_set]
    groups: list[tuple[list[int], AppendOutcome]] = []
    if small:
        outcome = multiappend_in_order(client, folder, [messages[i] for i in small], turn)
        if outcome.ok:
            groups.append((small, outcome))
        else:
            client.noop()  # in step again, whatever the server made of a refused command's end
            for i in small:
                groups.append(([i], append_one(client, folder, messages[i], synchronizing=False)))
    turn()
    for i in big:
        groups.append(([i], append_one(client, folder, messages[i], synchronizing=True)))
    return groups


def check_stored(client: IMAPClient, job: AppendJob, groups) -> None:
    """Read back what the destination stored for the appended messages (by APPENDUID) and
    compare it byte for byte with what was appended; a difference is classified with its
    evidence in `job.altered`. Without APPENDUID the copier finds its messages by digest, which
    is the same check."""
    by_uid = {}
    for indices, outcome in groups:
        if outcome.ok and outcome.uids and len(outcome.uids) == len(indices):
            by_uid.update(zip(outcome.uids, indices, strict=True))
    if not by_uid:
        return
    stored = read_back(client, job.dest_folder, sorted(by_uid))
    for uid, index in by_uid.items():
        appended = job.messages[index].data
        got = stored.get(uid)
        if got is None:
            job.altered[index] = (uid, "other", "the destination does not serve the UID its APPENDUID named")
        elif got != appended:
            job.altered[index] = (uid, *classify_alteration(appended, got))
    job.checked += len(by_uid)


class AppendLanes:
    """`count` lanes, each one thread with one destination session, opened on first use."""

    def __init__(self, endpoint: Endpoint, login: str, count: int, what: str, check_stored: bool = True):
        if count < 1:
            raise ValueError(f"append lanes: need at least 1, got {count}")
        self.endpoint, self.login, self.what = endpoint, login, what
        self.check_stored = check_stored
        self._pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"append-lane-{i}")
                       for i in range(count)]
        self._clients: list[IMAPClient | None] = [None] * count
        # the checker: reads stored copies back while the lanes append the next batches
        self._checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="append-check") if check_stored else None
        self._check_client: IMAPClient | None = None
        self._last: dict[int, AppendJob] = {}
        self._queued_bytes = [0] * count
        self._closing = False

    def submit(self, job: AppendJob) -> Future:
        """Queue a batch on the lane with the least work; it commits after the folder's previous
        batch. Every job waits only for jobs submitted before it, and each lane runs its jobs
        in order, so the lanes cannot wait on each other in a circle. The future returned is
        done when the destination answered the batch and (with `check_stored`) the checker
        compared what it stored."""
        job.previous = self._last.get(job.folder_key)
        self._last[job.folder_key] = job
        lane = min(range(len(self._pools)), key=lambda i: self._queued_bytes[i])
        size = job.bytes
        self._queued_bytes[lane] += size
        future = self._pools[lane].submit(self._run, lane, job)
        future.add_done_callback(lambda _f: self._done(lane, size))
        if self._checker is None:
            return future
        checked: Future = Future()
        future.add_done_callback(lambda f: self._to_checker(f, job, checked))
        return checked

    def _done(self, lane: int, size: int) -> None:
        self._queued_bytes[lane] -= size

    def _to_checker(self, appended: Future, job: AppendJob, checked: Future) -> None:
        """An answered batch goes to the checker; a failed one fails `checked` as it failed."""
        exc = appended.exception()
        if exc is None:
            try:
                self._checker.submit(self._check, job, appended.result(), checked)
                return
            except RuntimeError as shut:   # the checker is shut down: the attempt is ending
                exc = TransientError(f"{self.what}: stored-copy check abandoned ({shut})")
        checked.set_exception(exc)

    def _check(self, job: AppendJob, groups, checked: Future) -> None:
        """On the checker's own session: read the batch's stored copies back and compare."""
        try:
            if self._closing:
                raise TransientError(f"{self.what}: stored-copy check abandoned (the attempt is ending)")
            with translated_errors(f"{self.what}, stored-copy check"):
                if self._check_client is None:
                    self._check_client = open_session(self.endpoint, self.login)
                    self._check_client.normalise_times = False
                check_stored(self._check_client, job, groups)
        except BaseException as exc:
            client, self._check_client = self._check_client, None   # state unknown: never reuse it
            if client is not None:
                with contextlib.suppress(Exception):
                    client.shutdown()
            checked.set_exception(exc)
            return
        checked.set_result(groups)

    def _run(self, lane: int, job: AppendJob) -> list[tuple[list[int], AppendOutcome]]:
        try:
            if self._closing:
                raise TransientError(f"{self.what}: append abandoned (the attempt is ending)")
            with translated_errors(f"{self.what}, append lane {lane}"):
                if self._clients[lane] is None:
                    self._clients[lane] = open_session(self.endpoint, self.login)
                    self._clients[lane].normalise_times = False
                return append_batch(self._clients[lane], job.dest_folder, job.messages, job.limit,
                                    job.wait_turn)
        except BaseException:
            job.failed = True
            # the connection's state is unknown (a command may be half sent, and an APPEND that
            # never got its final CRLF must be discarded by the server): never reuse it
            client, self._clients[lane] = self._clients[lane], None
            if client is not None:
                with contextlib.suppress(Exception):
                    client.shutdown()
            raise
        finally:
            job.done.set()  # always: a later batch of the folder waits for it

    def close(self, abandon: bool = False) -> None:
        """Log every lane out once its queue is empty; with `abandon`, queued batches that did
        not start are failed instead of sent (they stay intents in the ledger)."""
        self._closing = abandon
        for pool in self._pools:
            pool.shutdown(wait=True)
        if self._checker is not None:   # after the lanes: every answered batch is handed over by now
            self._checker.shutdown(wait=True)
            close_session(self._check_client)
            self._check_client = None
        for client in self._clients:
            close_session(client)
        self._clients = [None] * len(self._clients)
