"""Match the messages of one destination folder against the union of its source folders.

Pure logic (no I/O), so it is unit-tested on its own. The ledger is used only to know which
transformation was declared for a source message (by source UID), to prefer the destination UID
the copier recorded when a message has several equal copies (attribution), and to recognise
messages the source expunged after they were copied. Whether a source message is present is
decided only by the bytes both servers serve now.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from mailshift.rules import states
from mailshift.verify.recount import SideFolder, SideMessage

#: source-side message not (correctly) at the destination / destination-side extra
SOURCE_SIDE = frozenset({"missing_at_dest", "digest_mismatch"})
DEST_SIDE = frozenset({"duplicate_at_dest", "unexpected_at_dest", "digest_mismatch"})
_STATE_NAMES = {int(s): s.name.lower() for s in states.MessageState}


@dataclass(frozen=True)
class LedgerInfo:
    folder_id: int
    src_uid: int
    state: int
    transform: int
    pop3_uidl: str | None
    dest_uid: int | None
    size: int
    src_sha256: bytes
    dest_sha256: bytes | None
    detail: str | None
    transform_detail: dict | None = None   # {"removed": [[offset, hex], ...]}: stale X-UIDL fields taken out

    @property
    def removed(self) -> list[tuple[int, bytes]]:
        """The X-UIDL header fields the copier declares it removed: [(offset in the source, bytes)]."""
        return [(int(o), bytes.fromhex(h)) for o, h in (self.transform_detail or {}).get("removed", [])]

    @property
    def copy_class(self) -> str | None:
        """The alteration class the copier recorded at copy time (state altered), else None."""
        return states.altered_class(self.detail) if self.state == states.ALTERED else None

    @property
    def dest_size(self) -> int:
        if self.transform == states.Transform.X_UIDL and self.pop3_uidl:
            return self.size + len(states.x_uidl_header(self.pop3_uidl))
        return self.size


@dataclass(frozen=True)
class SourceItem:
    src_folder: str
    folder_id: int | None
    msg: SideMessage
    ledger: LedgerInfo | None

    @property
    def transformed(self) -> bool:
        return bool(self.ledger and self.ledger.transform == states.Transform.X_UIDL and self.ledger.pop3_uidl)


def _declared_source(item: SourceItem) -> tuple:
    """(digest, size) the destination must hold behind its X-UIDL line: the source message
    without exactly the X-UIDL fields the ledger declares removed (the copier replaces a stale
    X-UIDL, never stacks a second one, and records what it removed: `message.transform_detail`),
    or the source message itself when it declares nothing removed. A declaration that does not
    fit the source bytes gives no digest: nothing matches, the message is reported altered."""
    if item.ledger.removed:
        return item.msg.declared_key, item.msg.declared_size
    return item.msg.key, item.msg.size


@dataclass
class Finding:
    kind: str
    src_folder: str | None = None
    folder_id: int | None = None
    src_uid: int | None = None
    dest_folder: str | None = None
    dest_uid: int | None = None
    src_size: int | None = None
    dest_size: int | None = None
    src_sha256: bytes | None = None
    dest_sha256: bytes | None = None
    pop3_uidl: str | None = None
    ledger_state: int | None = None
    detail: str = ""
    blocking: bool = True
    dest_uidvalidity: int | None = None
    waiver_id: int | None = None
    alteration_class: str | None = None   # digest_mismatch: the class of the bytes both servers serve now
    copy_class: str | None = None         # ... and the class the copier recorded at copy time
    accepted: bool = False                # its class is accepted by the building spec (not blocking)

    def label(self) -> str:
        return (f"{self.kind}: folder {self.src_folder or '-'} -> {self.dest_folder or '-'}, "
                f"source UID {self.src_uid if self.src_uid is not None else '-'}, "
                f"destination UID {self.dest_uid if self.dest_uid is not None else '-'}: {self.detail}")


@dataclass
class GroupResult:
    dest_folder: str
    src_folders: list[str]
    folder_id: int | None
    dest_uidvalidity: int | None
    src_count: int = 0
    dest_count: int = 0
    src_bytes: int = 0
    dest_bytes: int = 0
    matched: int = 0
    transformed: int = 0
    transform_bytes: int = 0
    expunged_kept: int = 0
    expunged_kept_bytes: int = 0
    sampled: int = 0
    findings: list[Finding] = field(default_factory=list)
    pairs: list[tuple[SourceItem, SideMessage]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)


def _digest(msg: SideMessage) -> bytes | None:
    return msg.full_digest


def _flag_text(flags: tuple) -> str:
    bits, kw = flags
    return " ".join(states.db_to_flags(bits, kw)) or "(none)"


def match_group(dest_folder: str, dest: SideFolder | None, sources: list[SourceItem],
                expunged: list[LedgerInfo], src_folders: list[tuple[str, int | None]],
                full: bool = True) -> GroupResult:
    """Match `sources` (all source folders mapping to `dest_folder`) against `dest`.

    In this order: a missing destination folder; each source message against the destination's
    content (exact bytes, or behind the declared X-UIDL line); destination leftovers (duplicates,
    source-expunged messages kept, or unpaired); unmatched source messages paired with unpaired
    destination messages (altered), else missing; unpaired destination messages left: unexpected."""
    m = _GroupMatcher(dest_folder, dest, sources, src_folders)
    m.folders_missing(src_folders)
    m.match_sources(sources)
    m.sort_leftovers(expunged, full)
    m.pair_unmatched()
    return m.res


class _GroupMatcher:
    """The state of one match_group call: the result, the destination UIDs used, the index."""

    def __init__(self, dest_folder: str, dest: SideFolder | None, sources: list[SourceItem],
                 src_folders: list[tuple[str, int | None]]):
        folder_ids = [fid for _, fid in src_folders if fid is not None]
        self.dest = dest
        self.res = res = GroupResult(dest_folder, [n for n, _ in src_folders],
                                     min(folder_ids) if folder_ids else None, dest.uidvalidity if dest else None)
        self.dmsgs = dmsgs = dest.messages if dest else {}
        res.src_count = len(sources)
        res.src_bytes = sum(s.msg.size for s in sources)
        res.dest_count = len(dmsgs)
        res.dest_bytes = sum(m.size for m in dmsgs.values())
        # index the destination: raw content, and content behind a leading X-UIDL line
        self.raw: dict[tuple, list[int]] = defaultdict(list)
        self.xform: dict[tuple, list[int]] = defaultdict(list)
        for uid in sorted(dmsgs):
            m = dmsgs[uid]
            self.raw[(m.key, m.size)].append(uid)
            if m.x_uidl is not None:
                self.xform[(m.x_uidl, m.stripped_key, m.stripped_size)].append(uid)
        self.used: set[int] = set()
        self.unmatched: list[SourceItem] = []
        self.content_owner: dict[tuple, SourceItem] = {}
        self.unpaired: list[SideMessage] = []

    def add(self, kind, item: SourceItem | None = None, d: SideMessage | None = None, detail="", blocking=True,
            **kw) -> Finding:
        f = Finding(kind, dest_folder=self.res.dest_folder, detail=detail, blocking=blocking,
                    dest_uidvalidity=self.res.dest_uidvalidity, **kw)
        if item is not None:
            f.src_folder, f.folder_id, f.src_uid, f.src_size = item.src_folder, item.folder_id, item.msg.uid, item.msg.size
            f.src_sha256 = _digest(item.msg)
            if item.ledger:
                f.ledger_state, f.pop3_uidl = item.ledger.state, item.ledger.pop3_uidl
        if d is not None:
            f.dest_uid, f.dest_size, f.dest_sha256 = d.uid, d.size, _digest(d)
        self.res.findings.append(f)
        return f

    def folders_missing(self, src_folders: list[tuple[str, int | None]]) -> None:
        if self.dest is None:
            for name, fid in src_folders:
                self.add("folder_missing", detail=f"destination folder {self.res.dest_folder!r} does not exist",
                         src_folder=name, folder_id=fid)

    # -- 1. source messages against the destination's content ---------------------------------
    def _take(self, pool: list[int], prefer: int | None) -> int | None:
        free = [u for u in pool if u not in self.used]
        if not free:
            return None
        uid = prefer if prefer in free else free[0]
        self.used.add(uid)
        return uid

    def _expected(self, item: SourceItem) -> tuple[dict, tuple]:
        if item.transformed:
            return self.xform, (item.ledger.pop3_uidl, *_declared_source(item))
        return self.raw, (item.msg.key, item.msg.size)

    def match_sources(self, sources: list[SourceItem]) -> None:
        res = self.res
        order = sorted(sources, key=lambda s: (s.ledger is None or s.ledger.dest_uid is None, s.src_folder,
                                               s.msg.uid))
        for item in order:
            index, key = self._expected(item)
            uid = self._take(index.get(key, []), item.ledger.dest_uid if item.ledger else None)
            if uid is None:
                self.unmatched.append(item)
                continue
            d = self.dmsgs[uid]
            res.matched += 1
            res.pairs.append((item, d))
            self.content_owner.setdefault((item.msg.key, item.msg.size), item)
            if item.transformed:  # bytes added by the declared line, less the stale fields it replaced
                res.transformed += 1
                res.transform_bytes += d.size - item.msg.size
            if item.msg.flags != d.flags:
                self.add("flags_mismatch", item, d, f"flags differ: source {_flag_text(item.msg.flags)}, "
                         f"destination {_flag_text(d.flags)}")
            if item.msg.date is not None and d.date is not None and item.msg.date != d.date:
                self.add("date_mismatch", item, d, f"INTERNALDATE differs: source {item.msg.date.isoformat()}, "
                         f"destination {d.date.isoformat()}")

    # -- 2. destination leftovers: duplicates, kept source-expunged messages, or unpaired -------
    def sort_leftovers(self, expunged: list[LedgerInfo], full: bool) -> None:
        exp_by_digest: dict[tuple, list[LedgerInfo]] = defaultdict(list)
        exp_by_uid: dict[int, LedgerInfo] = {}
        for e in expunged:
            exp_by_digest[(e.src_sha256, e.size)].append(e)
            if e.dest_uid is not None:
                exp_by_uid[e.dest_uid] = e
        for uid in sorted(self.dmsgs):
            if uid in self.used:
                continue
            d = self.dmsgs[uid]
            contents = [(d.key, d.size)]
            if d.x_uidl is not None:
                contents.append((d.stripped_key, d.stripped_size))
            owner = next((self.content_owner[c] for c in contents if c in self.content_owner), None)
            if owner is not None:
                self.add("duplicate_at_dest", owner, d, "a second copy of this source message is at the destination")
                continue
            e = _expunged_copy(d, contents, exp_by_digest, exp_by_uid, full)
            if e is not None:
                self.res.expunged_kept += 1
                self.res.expunged_kept_bytes += d.size
                self.add("expunged_at_source", None, d, "copied earlier, expunged at the source since; kept at "
                         "the destination (not blocking)", blocking=False, src_uid=e.src_uid, folder_id=e.folder_id,
                         ledger_state=e.state, pop3_uidl=e.pop3_uidl)
                continue
            self.unpaired.append(d)

    # -- 3. unmatched source messages: altered (paired with an unpaired one) or missing ---------
    def _pair(self, item: SourceItem) -> SideMessage | None:
        free = [d for d in self.unpaired if d.uid not in self.used]
        lu = (item.ledger.dest_uid if item.ledger and item.ledger.state in (states.COPIED, states.ALTERED)
              else None)
        for d in free:
            if lu is not None and d.uid == lu:
                return d
        for d in free:          # content equal but the declared transformation is not (so) applied
            if (d.key, d.size) == (item.msg.key, item.msg.size) or (
                    d.x_uidl is not None and (d.stripped_key, d.stripped_size) == (item.msg.key, item.msg.size)):
                return d
        if item.msg.msgid and item.msg.date is not None:
            k = (item.msg.msgid, item.msg.date)
            srcs = [s for s in self.unmatched if (s.msg.msgid, s.msg.date) == k]
            dsts = [d for d in free if (d.msgid, d.date) == k]
            if len(srcs) == 1 and len(dsts) == 1:
                return dsts[0]
        return None

    def pair_unmatched(self) -> None:
        for item in self.unmatched:
            d = self._pair(item)
            if d is not None:
                self.used.add(d.uid)
                self.add("digest_mismatch", item, d, _altered_why(item, d))
                continue
            led = item.ledger
            f = self.add("missing_at_dest", item, None, _missing_why(led))
            if led is not None and led.state == states.COPIED:
                f.dest_uid = led.dest_uid
        for d in self.unpaired:
            if d.uid not in self.used:
                self.add("unexpected_at_dest", None, d, "at the destination but from no source message"
                         + (f" (X-UIDL {d.x_uidl})" if d.x_uidl else ""))


def _expunged_copy(d: SideMessage, contents: list[tuple], exp_by_digest: dict, exp_by_uid: dict,
                   full: bool) -> LedgerInfo | None:
    """The ledger row of a message copied earlier and expunged at the source since that `d` is
    (full mode: by digest, consuming it; sample mode: by the recorded destination UID and size)."""
    if full:
        for c in contents:
            pool = exp_by_digest.get((c[0], c[1]))
            if pool:
                return pool.pop(0)
        return None
    cand = exp_by_uid.get(d.uid)
    if cand is not None and cand.dest_size == d.size:
        return cand
    return None


def _altered_why(item: SourceItem, d: SideMessage) -> str:
    if item.transformed and item.ledger.removed and item.msg.declared_key is None:
        return ("the X-UIDL fields the ledger declares removed (transform_detail) are not where it says in "
                "the source message")
    if (d.key, d.size) == (item.msg.key, item.msg.size):
        return f"bytes equal to the source but the declared X-UIDL header ({item.ledger.pop3_uidl}) is missing"
    if d.x_uidl is not None and (d.stripped_key, d.stripped_size) == (item.msg.key, item.msg.size):
        return (f"X-UIDL header says {d.x_uidl!r}, ledger declared "
                f"{item.ledger.pop3_uidl if item.transformed else 'no transformation'}")
    return (f"bytes differ from the source ({item.msg.size} bytes at the source, {d.size} at the "
            f"destination{', after removing the declared X-UIDL line' if item.transformed else ''})")


def _missing_why(led: LedgerInfo | None) -> str:
    if led is None:
        return "not at the destination; not in the ledger (arrived after the last copy pass?)"
    if led.state == states.COPIED:
        return f"not at the destination; the ledger says copied to destination UID {led.dest_uid}"
    if led.state in (states.REFUSED, states.FAILED):
        return f"not at the destination; ledger state {_STATE_NAMES[led.state]}: {led.detail}"
    return f"not at the destination; ledger state {_STATE_NAMES.get(led.state, led.state)}"


def check_sample(res: GroupResult, src_full: dict[int, SideMessage], dest_full: dict[int, SideMessage],
                 pairs: list[tuple[SourceItem, SideMessage]]) -> None:
    """Sample mode: compare full digests of sampled matched pairs; a difference is an altered message."""
    for item, d in pairs:
        s, t = src_full.get(item.msg.uid), dest_full.get(d.uid)
        if s is None or t is None:
            continue
        res.sampled += 1
        got = t.stripped_key if item.transformed else t.full_digest
        want = s.declared_key if item.transformed and item.ledger.removed else s.full_digest
        if got is None or got != want:
            res.matched -= 1
            f = Finding("digest_mismatch", item.src_folder, item.folder_id, item.msg.uid, res.dest_folder, d.uid,
                        item.msg.size, d.size, s.full_digest, t.full_digest,
                        item.ledger.pop3_uidl if item.ledger else None,
                        item.ledger.state if item.ledger else None,
                        "headers and size equal but the full bytes differ (sampled full digest)",
                        dest_uidvalidity=res.dest_uidvalidity)
            res.findings.append(f)
