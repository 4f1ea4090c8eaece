"""Copy one mailbox from a legacy server to the destination, exactly once, through the ledger.

One call is one *pass* (prestage, delta, final or drain) over every folder of the mailbox:

1. Read the source read-only (EXAMINE, BODY.PEEK) and the ledger's rows for each folder.
2. Resolve leftover intents of a killed run by looking at the destination (`_recover`).
3. Append what the ledger does not have as copied, in batches: intents → commit → MULTIAPPEND
   → copied with the APPENDUID → commit. Refusals are recorded with the server's words.
4. Sync flags that changed at the source; report messages expunged at the source.

Identity is the source (UIDVALIDITY, UID); content identity is SHA-256 of the raw bytes. No
header (Message-ID or other) is ever used to decide whether a message was copied.
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from imapclient import IMAPClient

from mailshift.copy import failpoints
from mailshift.copy.lanes import AppendJob, AppendLanes
from mailshift.errors import FolderCollision, ProtocolError, TransientError
from mailshift.protocols.endpoint import Endpoint
from mailshift.protocols.imap.append import OutgoingMessage, appendlimit
from mailshift.protocols.imap.folders import SPECIAL_USES, FolderPlan, Namespace, namespace_of, plan_folder
from mailshift.protocols.imap.session import (
    close_session,
    fetch_range,
    fetch_uids,
    open_session,
    prove_endpoints,
    translated_errors,
)
from mailshift.protocols.pop3 import (
    map_uidls_to_uids,
    message_date,
    open_pop3,
    pop3_entries,
    pop3_source_uids,
    read_uidls,
    retrieve,
    strip_x_uidl_fields,
)
from mailshift.rules import states
from mailshift.store.ledger import CopyStore, FolderRow, Intent, LedgerRow

log = logging.getLogger(__name__)

PASS_KINDS = states.PASS_KINDS
UIDL_STRATEGIES = ("x-uidl-header", "none")


@dataclass(frozen=True)
class MailboxRef:
    """The mailbox as the inventory knows it."""

    id: int
    address: str
    source_login: str
    dest_login: str
    protocol: str = "imap"


@dataclass(frozen=True)
class CopyOptions:
    pass_kind: str = "prestage"
    uidl_strategy: str = "none"
    folder_map: dict | None = None
    batch_messages: int = 250
    batch_bytes: int = 12 * 1024 * 1024
    intent_grace_seconds: float = 2.0
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    #: destination connections that append in parallel (commits kept in each folder's order)
    append_lanes: int = 3
    #: batches appended or waiting at once (bounds memory: each is at most batch_bytes)
    max_batches_in_flight: int = 6
    #: read every appended message back and compare it byte for byte (an alteration becomes
    #: state `altered` with its class and evidence); off only to measure its cost
    check_stored: bool = True

    def __post_init__(self):
        if self.pass_kind not in PASS_KINDS:
            raise ValueError(f"pass kind {self.pass_kind!r}: expected one of {', '.join(PASS_KINDS)}")
        if self.append_lanes < 1 or self.max_batches_in_flight < 1:
            raise ValueError("append_lanes and max_batches_in_flight must be at least 1")
        if self.uidl_strategy not in UIDL_STRATEGIES:
            raise ValueError(f"uidl_strategy {self.uidl_strategy!r}: expected one of {', '.join(UIDL_STRATEGIES)}")


@dataclass
class PassSummary:
    mailbox: str
    pass_kind: str
    pass_id: int | None = None
    folders: int = 0
    source_messages: int = 0
    copied: int = 0
    already: int = 0
    refused: int = 0
    altered: int = 0          # stored by the destination but not byte-identical (class in alterations)
    stored_checked: int = 0   # appended messages read back and compared at copy time
    failed: int = 0
    recovered: int = 0
    reappended: int = 0
    flags_synced: int = 0
    expunged_at_source: int = 0
    vanished_during_copy: int = 0
    bytes: int = 0
    attempts: int = 0
    seconds: float = 0.0
    folders_gone: list = field(default_factory=list)
    folders_refused: list = field(default_factory=list)   # {folder, dest_folder, side, command, reason}
    uidvalidity_changes: list = field(default_factory=list)  # {folder, uidvalidity, found_again, gone}
    alterations: list = field(default_factory=list)  # {folder, uid, dest_uid, class}
    renamed_folders: list = field(default_factory=list)
    refusals: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


# -- flag helpers ---------------------------------------------------------------------------
def _flag_text(flag) -> str:
    return flag.decode("utf-8", "replace") if isinstance(flag, bytes) else str(flag)


def split_flags(flags) -> tuple[int, tuple[str, ...]]:
    """FETCH FLAGS -> (sys_flags bits, sorted keywords), \\Recent dropped."""
    bits, keywords = states.flags_to_db(flags)
    return bits, tuple(keywords or ())


def join_flags(sys_flags: int, keywords: tuple[str, ...]) -> tuple[str, ...]:
    return states.db_to_flags(sys_flags, keywords)


# -- folder collisions -----------------------------------------------------------------------
def check_collisions(address: str, plans: list[FolderPlan], folder_map: dict | None) -> None:
    """Refuse, before anything is written, two source folders that land in one destination folder.

    Allowed only when the merge is declared: every folder of the group is sent there by the
    building spec's `folder_map`, or by its special-use role (e.g. "Sent Items" and "Sent" both
    into the destination's \\Sent folder, which the verifier matches as one group). Anything
    else — two names that differ only by a renamed separator, or a map sending one folder onto
    another's name — is a FolderCollision naming the folders; the spec must say how to resolve it.
    """
    groups: dict[str, list[FolderPlan]] = defaultdict(list)
    for plan in plans:
        groups[plan.dest_name].append(plan)
    bad = []
    for dest_name, group in sorted(groups.items()):
        if len(group) < 2:
            continue
        declared = all(p.special_use or (p.note or "").startswith("folder_map:") for p in group)
        if not declared:
            bad.append(f"{', '.join(repr(p.src_name) for p in group)} -> {dest_name!r}")
    if bad:
        raise FolderCollision(f"mailbox {address}: source folders would be merged into one destination folder: "
                              f"{'; '.join(bad)}; nothing was written: map them apart (or together, on purpose) "
                              "with the building spec's folder_map")


# -- the copier -----------------------------------------------------------------------------
class MailboxCopier:
    """Runs one pass of one mailbox. Create one per mailbox and call `run()`."""

    def __init__(self, store: CopyStore, mailbox: MailboxRef, source: Endpoint, dest: Endpoint,
                 options: CopyOptions | None = None, progress=None):
        self.store = store
        self.mailbox = mailbox
        self.source = source
        self.dest = dest
        self.opt = options or CopyOptions()
        self.progress = progress or (lambda summary: None)
        self.summary = PassSummary(mailbox.address, self.opt.pass_kind)
        self.src: IMAPClient | None = None
        self.dst: IMAPClient | None = None
        self.lanes: AppendLanes | None = None
        self._in_flight: deque = deque()   # (future, job) in submission order
        self._floors: dict[int, int] = {}  # folder id -> lowest destination UID a new APPEND can get

    # The retry loop: any TransientError restarts the pass from the ledger.
    def run(self) -> PassSummary:
        started = time.monotonic()
        self.summary.pass_id = self.store.open_pass(self.mailbox.id, self.opt.pass_kind)
        status = "failed"
        try:
            for attempt in range(1, self.opt.max_attempts + 1):
                self.summary.attempts = attempt
                try:
                    self._run_once()
                    status = "finished"
                    break
                except TransientError as exc:
                    if attempt == self.opt.max_attempts:
                        raise
                    delay = self.opt.backoff_seconds * (2 ** (attempt - 1))
                    log.warning("%s: %s; attempt %d/%d, retrying in %.1fs", self.mailbox.address, exc,
                                attempt, self.opt.max_attempts, delay)
                    time.sleep(delay)
                finally:
                    self._abandon_lanes()
                    close_session(self.src)
                    close_session(self.dst)
                    self.src = self.dst = None
        finally:
            self.summary.seconds = round(time.monotonic() - started, 3)
            try:
                self.store.finish_pass(self.summary.pass_id, status, self.summary.as_dict())
            except Exception:  # never hide the error that ended the pass behind a ledger error
                log.exception("%s: could not record the end of pass %s", self.mailbox.address,
                              self.summary.pass_id)
                if status == "finished":
                    raise
        return self.summary

    def _run_once(self) -> None:
        # both identity probes at once (cached per server), before any session
        prove_endpoints((self.source, self.mailbox.source_login), (self.dest, self.mailbox.dest_login))
        if not self.source.imap:
            return self._run_pop3_only()
        mb = self.mailbox
        self.src = open_session(self.source, mb.source_login)
        self.src.normalise_times = False
        self.dst = open_session(self.dest, mb.dest_login)
        self.dst.normalise_times = False
        with translated_errors(f"mailbox {mb.address}"):
            src_ns = namespace_of(self.src)
            dst_ns = namespace_of(self.dst)
            subscribed = {name for _, _, name in self.src.list_sub_folders()}
            dest_names, dest_special = self._dest_listing()
            plans = [(plan_folder(name, src_ns, dst_ns, tuple(flags), dest_special, self.opt.folder_map), flags)
                     for flags, _, name in self.src.list_folders()]
            check_collisions(mb.address, [p for p, _ in plans], self.opt.folder_map)  # before any write
            self._start_lanes()
            uidl_map = self._legacy_uidls() if self._wants_x_uidl() else {}
            self.summary.folders = 0
            self.summary.folders_refused = []
            for plan, flags in plans:
                name = plan.src_name
                if plan.note and plan.note not in self.summary.renamed_folders:
                    self.summary.renamed_folders.append(f"{name}: {plan.note}")
                selectable = not any(_flag_text(f).lower() in ("\\noselect", "\\nonexistent") for f in flags)
                if not self._ensure_dest_folder(plan, name in subscribed, dest_names, dst_ns):
                    continue
                if selectable:
                    self.summary.folders += 1
                    self._copy_folder(plan, name in subscribed, uidl_map if name.upper() == "INBOX" else {})
            self._settle_all()
            self.summary.folders_gone = self.store.mark_folders_gone(mb.id, [p.src_name for p, _ in plans])

    def _dest_listing(self) -> tuple[set, dict]:
        """Destination folder names, and the folder holding each special use."""
        listing = self.dst.list_folders()
        special: dict[str, str] = {}
        for flags, _, name in listing:
            for f in flags:
                if _flag_text(f) in SPECIAL_USES:
                    special.setdefault(_flag_text(f), name)
        return {name for _, _, name in listing}, special

    def _folder_refused(self, plan: FolderPlan, side: str, command: str, name: str, exc: Exception) -> None:
        """A folder the server refuses stays a folder-level fault: recorded (folder, the server's
        words) on the ledger's folder row — the verifier then finds the folder missing, which blocks
        the proof — and the pass goes on with the other folders."""
        words = str(exc)[:300]
        detail = f"{side} refused {command} {name!r}: {words}"
        self.store.mark_folder_unmappable(self.mailbox.id, plan.src_name, detail)
        self.summary.folders_refused.append({"folder": plan.src_name, "dest_folder": plan.dest_name,
                                             "side": side, "command": command, "reason": words})
        log.warning("%s: folder %r: %s", self.mailbox.address, plan.src_name, detail)

    def _select(self, client: IMAPClient, plan: FolderPlan, side: str, name: str, readonly: bool):
        """SELECT/EXAMINE a folder; None (recorded) when the server refuses it with NO/BAD."""
        try:
            return client.select_folder(name, readonly=readonly)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            self._folder_refused(plan, side, "EXAMINE" if readonly else "SELECT", name, exc)
            return None

    # -- POP3 UIDLs ---------------------------------------------------------------------
    def _wants_x_uidl(self) -> bool:
        return self.opt.uidl_strategy == "x-uidl-header" and self.mailbox.protocol == "pop3"

    def _legacy_uidls(self) -> dict[int, str]:
        """INBOX UID -> legacy UIDL, read over POP3 between two identical IMAP snapshots."""
        for _ in range(3):
            before = self._inbox_snapshot()
            entries = read_uidls(self.source, self.mailbox.source_login)
            after = self._inbox_snapshot()
            if before == after:
                return map_uidls_to_uids(entries, before)
        raise TransientError(f"mailbox {self.mailbox.address}: INBOX kept changing while reading POP3 UIDLs")

    def _inbox_snapshot(self) -> list[tuple[int, int]]:
        info = self.src.select_folder("INBOX", readonly=True)
        if not info.get(b"EXISTS"):
            return []
        data = fetch_range(self.src, "1:*", ["RFC822.SIZE"])
        return sorted((uid, d[b"RFC822.SIZE"]) for uid, d in data.items())

    # -- folders ------------------------------------------------------------------------
    def _ensure_dest_folder(self, plan: FolderPlan, subscribed: bool, dest_names: set, dst_ns: Namespace) -> bool:
        """Create the destination folder (parents first: some servers do not create intermediate
        levels). False when the destination refuses it: recorded, the other folders go on."""
        if plan.dest_name not in dest_names:
            parts = plan.dest_name.split(dst_ns.separator) if dst_ns.separator else [plan.dest_name]
            for i in range(1, len(parts) + 1):
                name = dst_ns.separator.join(parts[:i])
                if name in dest_names or name == dst_ns.prefix.rstrip(dst_ns.separator):
                    continue
                try:
                    self.dst.create_folder(name)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error as exc:  # ALREADYEXISTS races are fine
                    if "exist" not in str(exc).lower():
                        self._folder_refused(plan, "destination", "CREATE", name, exc)
                        return False
                dest_names.add(name)
        if subscribed:
            self.dst.subscribe_folder(plan.dest_name)
        return True

    def _open_dest_folder(self, plan: FolderPlan, folder: FolderRow) -> int | None:
        """SELECT the destination folder, check its UIDVALIDITY against the ledger, and return
        its UIDNEXT (None: the destination refused the folder, recorded)."""
        dinfo = self._select(self.dst, plan, "destination", folder.dest_name, readonly=False)
        if dinfo is None:
            return None
        self.store.clear_folder_refusal(self.mailbox.id, plan.src_name)
        dest_uidvalidity = int(dinfo[b"UIDVALIDITY"])
        if folder.dest_uidvalidity is None:
            self.store.set_dest_uidvalidity(folder.id, dest_uidvalidity)
        elif folder.dest_uidvalidity != dest_uidvalidity:
            raise ProtocolError(
                f"mailbox {self.mailbox.address}: destination folder {folder.dest_name!r} changed UIDVALIDITY "
                f"({folder.dest_uidvalidity} -> {dest_uidvalidity}); its ledger UIDs are stale — "
                "a person must re-verify this folder before copying continues")
        return int(dinfo[b"UIDNEXT"])

    def _resolved_rows(self, folder: FolderRow) -> dict[int, LedgerRow]:
        """The folder's ledger rows after leftover intents of a killed run were resolved."""
        rows = self.store.rows(self.mailbox.id, folder.id)
        intents = [r for r in rows.values() if r.state == states.INTENT]
        if intents:
            self._recover(folder, intents)
            rows = self.store.rows(self.mailbox.id, folder.id)
        return rows

    # -- a legacy system that offers only POP3 ------------------------------------------
    def _run_pop3_only(self) -> None:
        """UIDL, LIST and RETR only (never DELE, never QUIT) into the destination INBOX, through
        the same ledger (pseudo-folder INBOX with UIDVALIDITY 0; the source UID is derived from
        the UIDL, which a POP3 server keeps per message), lanes, copy-time check and X-UIDL
        transformation as IMAP sources. Every row records its legacy UIDL."""
        mb = self.mailbox
        self.dst = open_session(self.dest, mb.dest_login)
        self.dst.normalise_times = False
        with open_pop3(self.source, mb.source_login) as pop, translated_errors(f"mailbox {mb.address}"):
            by_uid = pop3_source_uids(pop3_entries(pop))
            self._start_lanes()
            plan = FolderPlan("INBOX", "INBOX", None, "POP3-only source (UIDL, LIST, RETR)")
            folder = self.store.folder(mb.id, "INBOX", 0, "INBOX", None, True, plan.note)
            self.summary.folders, self.summary.source_messages = 1, len(by_uid)
            dest_uidnext = self._open_dest_folder(plan, folder)
            if dest_uidnext is None:
                return
            rows = self._resolved_rows(folder)
            todo = [u for u in sorted(by_uid) if u not in rows or rows[u].state in (states.REFUSED, states.FAILED)]
            self.summary.already += sum(1 for u in by_uid if u in rows and rows[u].state == states.COPIED)
            expunged = [u for u, r in rows.items() if r.state == states.COPIED and u not in by_uid]
            if expunged:
                self.store.mark_source_expunged(mb.id, folder.id, expunged)
                self.summary.expunged_at_source += len(expunged)
            meta = {u: {b"RFC822.SIZE": e.size, b"FLAGS": (), b"INTERNALDATE": None} for u, e in by_uid.items()}
            uidls = {u: e.uidl for u, e in by_uid.items()}
            self._floors[folder.id] = dest_uidnext
            for batch in self._batches(todo, meta):
                fetched = {}
                for u in batch:
                    raw = retrieve(pop, by_uid[u].number)
                    meta[u][b"INTERNALDATE"] = message_date(raw)
                    fetched[u] = {b"BODY[]": raw}
                self._send_batch(folder, batch, fetched, meta, uidls, prepend=self._wants_x_uidl())
            self._settle_all()

    def _start_lanes(self) -> None:
        mb = self.mailbox
        self.limit = appendlimit(self.dst)
        self.lanes = AppendLanes(self.dest, mb.dest_login, self.opt.append_lanes, f"mailbox {mb.address}",
                                 check_stored=self.opt.check_stored)
        self._in_flight.clear()
        self._floors.clear()

    def _copy_folder(self, plan: FolderPlan, subscribed: bool, uidl_map: dict[int, str]) -> None:
        mb = self.mailbox
        info = self._select(self.src, plan, "source", plan.src_name, readonly=True)
        if info is None:
            return
        uidvalidity = int(info[b"UIDVALIDITY"])
        folder = self.store.folder(mb.id, plan.src_name, uidvalidity, plan.dest_name, plan.special_use,
                                   subscribed, plan.note)
        meta = {}
        if info.get(b"EXISTS"):
            meta = fetch_range(self.src, "1:*", ["RFC822.SIZE", "FLAGS", "INTERNALDATE"])
        self.summary.source_messages += len(meta)
        dest_uidnext = self._open_dest_folder(plan, folder)
        if dest_uidnext is None:
            return
        rows = self._resolved_rows(folder)
        if not rows:  # a new UIDVALIDITY epoch (also after a crash mid-rematch: nothing of it is written)
            previous = self.store.older_epochs(mb.id, plan.src_name, uidvalidity)
            if previous:
                self._rematch_new_epoch(folder, previous, meta)
                rows = self.store.rows(mb.id, folder.id)

        todo = []
        flag_changes = []
        for uid in sorted(meta):
            row = rows.get(uid)
            if row is None or row.state in (states.REFUSED, states.FAILED):
                todo.append(uid)
            elif row.state == states.COPIED:
                self.summary.already += 1
                sflags, kw = split_flags(meta[uid][b"FLAGS"])
                if (sflags, tuple(sorted(kw))) != (row.sys_flags, tuple(sorted(row.keywords))):
                    flag_changes.append((row, sflags, kw))
        expunged = [uid for uid, r in rows.items() if r.state == states.COPIED and uid not in meta]
        if expunged:
            self.store.mark_source_expunged(mb.id, folder.id, expunged)
            self.summary.expunged_at_source += len(expunged)
        if flag_changes:
            self._sync_flags(folder, flag_changes)
        batches = list(self._batches(todo, meta))
        if not batches:
            return
        self._floors[folder.id] = dest_uidnext
        # Pipeline: the next batch is read from the source (prefetch thread) while this one is
        # recorded as intents and handed to an append lane, which stores earlier batches at
        # the destination meanwhile. The ledger is written by this thread only (`_settle`).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as reader:
            pending = reader.submit(self._fetch_bodies, batches[0])
            for i, batch in enumerate(batches):
                fetched = pending.result()
                if i + 1 < len(batches):
                    pending = reader.submit(self._fetch_bodies, batches[i + 1])
                self._send_batch(folder, batch, fetched, meta, uidl_map)

    def _batches(self, uids: list[int], meta: dict):
        batch, size = [], 0
        for uid in uids:
            msize = meta[uid][b"RFC822.SIZE"]
            if batch and (len(batch) >= self.opt.batch_messages or size + msize > self.opt.batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(uid)
            size += msize
        if batch:
            yield batch

    # -- copying ------------------------------------------------------------------------
    def _fetch_bodies(self, uids: list[int]) -> dict:
        """Raw bytes of a batch, read-only (BODY.PEEK); runs on the prefetch thread."""
        return fetch_uids(self.src, uids, ["BODY.PEEK[]"])

    def _send_batch(self, folder: FolderRow, uids: list[int], fetched: dict, meta: dict, uidl_map: dict,
                    prepend: bool = True) -> None:
        """Record a batch as intents (committed), then hand it to the append lanes."""
        mb = self.mailbox
        intents: list[Intent] = []
        outgoing: list[OutgoingMessage] = []
        for uid in uids:
            body = fetched.get(uid, {}).get(b"BODY[]")
            if body is None:  # expunged at the source between the two reads: nothing to copy
                self.summary.vanished_during_copy += 1
                continue
            m = meta[uid]
            sflags, kw = split_flags(m[b"FLAGS"])
            digest = hashlib.sha256(body).digest()
            transform, data, dest_digest, uidl, detail = states.Transform.NONE, body, None, uidl_map.get(uid), None
            if uidl is not None and prepend:
                # one X-UIDL line: a stale one (from an old POP3 client) is replaced, not stacked;
                # what is removed is recorded so the proof can put it back
                transform = states.Transform.X_UIDL
                clean, removed = strip_x_uidl_fields(body)
                data = states.x_uidl_header(uidl) + clean
                dest_digest = hashlib.sha256(data).digest()
                detail = {"removed": [[offset, chunk.hex()] for offset, chunk in removed]} if removed else None
            intents.append(Intent(uid, len(body), m[b"INTERNALDATE"], sflags, kw, digest, dest_digest,
                                  transform, uidl, len(data), detail))
            outgoing.append(OutgoingMessage(join_flags(sflags, kw), m[b"INTERNALDATE"], data))
        if not intents:
            return
        # The floor is the lowest UID these messages can get: any UID the destination assigns
        # from now on is at least the highest one it has already confirmed, plus one.
        floor = self._floors[folder.id]
        self.store.write_intents(mb.id, folder.id, self.summary.pass_id, floor, intents)
        failpoints.hit("after_intents")
        job = AppendJob(folder.id, folder.dest_name, outgoing, self.limit,
                        {"folder": folder, "intents": intents, "floor": floor})
        while len(self._in_flight) >= self.opt.max_batches_in_flight:
            self._settle_oldest()
        self._in_flight.append((self.lanes.submit(job), job))
        while self._in_flight and self._in_flight[0][0].done():
            self._settle_oldest()

    def _settle_oldest(self, after_error: bool = False) -> None:
        """Wait for the oldest batch in flight and record it. If its append failed, record what
        the other lanes did and raise; after an error (`after_error`) a failed batch is just
        left as intents: the retry resolves them by looking at the destination."""
        future, job = self._in_flight.popleft()
        try:
            groups = future.result()
        except BaseException:
            if after_error:
                return  # the first error is the one raised
            self._settle_all(after_error=True)
            raise
        self._settle(job, groups)

    def _settle_all(self, after_error: bool = False) -> None:
        while self._in_flight:
            self._settle_oldest(after_error)

    def _abandon_lanes(self) -> None:
        """End of an attempt: let the lanes finish what they were sending, then close them.
        Anything not settled stays an intent in the ledger, resolved by the next attempt."""
        if self._in_flight:  # the source or this thread failed: record what the lanes stored
            try:
                self._settle_all(after_error=True)
            except Exception:  # the error that ended the attempt is the one to report
                log.exception("%s: could not record the batches in flight", self.mailbox.address)
        lanes, self.lanes = self.lanes, None
        unsettled = bool(self._in_flight)
        self._in_flight.clear()
        if lanes is not None:
            lanes.close(abandon=unsettled)

    def _settle(self, job: AppendJob, groups) -> None:
        """Write what the destination answered for one batch into the ledger."""
        mb = self.mailbox
        folder, intents, floor = job.context["folder"], job.context["intents"], job.context["floor"]
        copied: list[tuple[int, int]] = []
        refused: list[tuple[int, str]] = []
        for indices, outcome in groups:
            if outcome.ok:
                copied += self._landed(folder, [intents[i] for i in indices], outcome, floor)
            else:
                refused += [(intents[i].src_uid, outcome.text) for i in indices]
        altered = [(intents[i].src_uid, uid, f"{cls}: {evidence}") for i, (uid, cls, evidence) in job.altered.items()]
        if altered:  # stored, but not these bytes: its own state, never "copied"
            bad = {a[0] for a in altered}
            copied = [c for c in copied if c[0] not in bad]
            self.summary.altered += len(altered)
            self.summary.alterations += [{"folder": folder.src_name, "uid": a[0], "dest_uid": a[1],
                                          "class": a[2].split(":", 1)[0]} for a in altered]
        self.summary.stored_checked += job.checked
        failpoints.hit("after_append")
        self.store.mark_altered(mb.id, folder.id, altered)
        self.store.mark_copied(mb.id, folder.id, copied)
        failpoints.hit("after_mark_copied")
        self.store.mark_refused(mb.id, folder.id, refused)
        self.summary.copied += len(copied)
        self.summary.refused += len(refused)
        by_uid = {i.src_uid: i for i in intents}
        self.summary.bytes += sum(by_uid[u].size for u, _ in copied)
        for uid, reason in refused:
            self.summary.refusals.append({"folder": folder.src_name, "uid": uid, "reason": reason})
        self._floors[folder.id] = max([self._floors[folder.id]] + [d + 1 for _, d in copied])
        self.progress(self.summary)

    def _landed(self, folder: FolderRow, intents: list[Intent], outcome, floor: int) -> list[tuple[int, int]]:
        """Destination UIDs for appended intents: APPENDUID, or a digest search without UIDPLUS."""
        if outcome.uids and len(outcome.uids) == len(intents):
            return [(i.src_uid, uid) for i, uid in zip(intents, outcome.uids, strict=True)]
        found = self._find_at_destination(folder, [(i.src_uid, i.dest_size, i.dest_sha256 or i.src_sha256)
                                                   for i in intents], floor)
        missing = [i.src_uid for i in intents if i.src_uid not in found]
        if missing:
            raise ProtocolError(f"mailbox {self.mailbox.address}: APPEND said OK but {len(missing)} message(s) "
                                f"of {folder.src_name!r} are not at the destination (source UIDs {missing[:10]})")
        return list(found.items())

    # -- crash recovery -----------------------------------------------------------------
    def _recover(self, folder: FolderRow, intents: list[LedgerRow]) -> None:
        """Decide for each intent of a killed run whether its APPEND landed.

        An intent's dest_uid holds the destination's UIDNEXT before the APPEND, so a landed
        copy is a message at UID >= that floor, not owned by another ledger row, with the
        digest of the bytes we appended. A server may still be finishing a command of the
        killed connection, so intents younger than the grace period are looked at twice.
        """
        floor = min(r.dest_uid for r in intents if r.dest_uid is not None)
        wanted = [(r.src_uid, r.dest_size, r.dest_digest) for r in intents]
        found = self._find_at_destination(folder, wanted, floor)
        if len(found) < len(intents) and self.opt.intent_grace_seconds > 0:
            time.sleep(self.opt.intent_grace_seconds)
            self.dst.select_folder(folder.dest_name)
            found = self._find_at_destination(folder, wanted, floor)
        self.store.mark_copied(self.mailbox.id, folder.id, list(found.items()))
        lost = [r.src_uid for r in intents if r.src_uid not in found]
        self.store.drop_intents(self.mailbox.id, folder.id, lost)
        self.summary.recovered += len(found)
        self.summary.reappended += len(lost)

    def _exists(self, folder: FolderRow) -> int:
        return int(self.dst.folder_status(folder.dest_name, ["MESSAGES"])[b"MESSAGES"])

    def _find_at_destination(self, folder: FolderRow, wanted: list[tuple[int, int, bytes]],
                             floor: int) -> dict[int, int]:
        """Match (src_uid, size, digest) against destination messages with UID >= floor."""
        self.dst.select_folder(folder.dest_name)
        claimed = self.store.claimed_dest_uids(self.mailbox.id, folder.dest_name)
        sizes = {size for _, size, _ in wanted}
        meta = fetch_range(self.dst, f"{max(floor, 1)}:*", ["RFC822.SIZE"]) if self._exists(folder) else {}
        candidates = [uid for uid, m in meta.items()
                      if uid >= floor and uid not in claimed and m[b"RFC822.SIZE"] in sizes]
        by_digest: dict[bytes, list[int]] = defaultdict(list)
        for chunk_start in range(0, len(candidates), 100):
            chunk = sorted(candidates[chunk_start:chunk_start + 100])
            for uid, d in sorted(fetch_uids(self.dst, chunk, ["BODY.PEEK[]"]).items()):
                by_digest[hashlib.sha256(d[b"BODY[]"]).digest()].append(uid)
        found = {}
        for src_uid, _, digest in sorted(wanted):
            pool = by_digest.get(digest)
            if pool:
                found[src_uid] = pool.pop(0)
        return found

    def _rematch_new_epoch(self, folder: FolderRow, previous: list[int], meta: dict) -> None:
        """The source folder got a new UIDVALIDITY: messages already copied are found again by
        digest and their ledger rows move to the new epoch (one transaction); the old epoch's
        rows that are not found again become source_expunged. Nothing is counted twice."""
        mb = self.mailbox
        old = [(fid, r) for fid in previous for r in self.store.rows(mb.id, fid).values() if r.state == states.COPIED]
        pool: dict[bytes, list[tuple[int, LedgerRow]]] = defaultdict(list)
        for fid, r in old:
            pool[r.src_sha256].append((fid, r))
        moved: list[tuple[Intent, int, int, int]] = []
        uids = sorted(meta) if pool else []
        for start in range(0, len(uids), 100):
            chunk = uids[start:start + 100]
            for uid, d in fetch_uids(self.src, chunk, ["BODY.PEEK[]"]).items():
                body = d[b"BODY[]"]
                digest = hashlib.sha256(body).digest()
                if pool.get(digest):
                    fid, r = pool[digest].pop(0)
                    moved.append((Intent(uid, len(body), meta[uid][b"INTERNALDATE"], r.sys_flags, r.keywords,
                                         digest, r.dest_sha256, r.transform, r.pop3_uidl, r.dest_size,
                                         r.transform_detail), r.dest_uid, fid, r.src_uid))
        gone = self.store.supersede_epoch(mb.id, folder.id, self.summary.pass_id, previous, moved,
                                          folder.src_uidvalidity)
        self.summary.recovered += len(moved)
        self.summary.expunged_at_source += gone
        self.summary.uidvalidity_changes.append({"folder": folder.src_name, "uidvalidity": folder.src_uidvalidity,
                                                 "found_again": len(moved), "gone": gone})

    # -- flags --------------------------------------------------------------------------
    def _sync_flags(self, folder: FolderRow, changes: list) -> None:
        self.dst.select_folder(folder.dest_name)
        done = []
        for row, sflags, kw in changes:
            self.dst.set_flags([row.dest_uid], list(join_flags(sflags, kw)), silent=True)
            done.append((row.src_uid, sflags, kw))
        self.store.update_flags(self.mailbox.id, folder.id, done)
        self.summary.flags_synced += len(done)


def copy_mailbox(store: CopyStore, mailbox: MailboxRef, source: Endpoint, dest: Endpoint,
                 options: CopyOptions | None = None, progress=None) -> PassSummary:
    """One pass of one mailbox; see the module docstring."""
    return MailboxCopier(store, mailbox, source, dest, options, progress).run()

