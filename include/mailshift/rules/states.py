"""Codes stored in the ``message`` ledger (smallint columns), mirrored from
``migrations/0001_init.sql`` (tables ``message_state`` / ``message_transform``
and the CHECK constraints), plus the IMAP flag <-> (sys_flags, keywords) mapping.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable

#: the copy passes (the pass table's `kind`); here so parse-time code can import it cheaply
PASS_KINDS = ("prestage", "delta", "final", "drain")


class MessageState(enum.IntEnum):
    INTENT = 0            # APPEND about to be sent; resume must look at the destination
    COPIED = 1            # at the destination (dest_uid, dest_sha256)
    REFUSED = 2           # destination said no; its words in detail
    FAILED = 3            # reserved by the schema (0001); the copier never writes it: an error
                          # leaves the intent for the next pass, a NO from the destination is REFUSED
    SOURCE_EXPUNGED = 4   # was copied, gone at the source since
    ALTERED = 5           # stored, but the destination changed its bytes: class + evidence in detail (0008)


INTENT, COPIED, REFUSED, FAILED, SOURCE_EXPUNGED, ALTERED = (
    MessageState.INTENT, MessageState.COPIED, MessageState.REFUSED,
    MessageState.FAILED, MessageState.SOURCE_EXPUNGED, MessageState.ALTERED)

#: states after which the copier has nothing left to do for the row
SETTLED_STATES = frozenset({COPIED, SOURCE_EXPUNGED})
#: states that block the gate until fixed or waived
BLOCKING_STATES = frozenset({INTENT, REFUSED, FAILED, ALTERED})
#: states whose ``detail`` must carry the reason (CHECK message_reason)
STATES_NEEDING_DETAIL = frozenset({REFUSED, FAILED, ALTERED})
#: classes of an ALTERED message (`detail` = "<class>: <evidence>"), as
#: `protocols.imap.append.classify_alteration` names them; a building spec's
#: `accepted_alterations` names some of them (the schema's enum is this list)
ALTERATION_CLASSES = ("line_endings", "header_bytes_replaced", "truncated", "other")


def altered_class(detail: str | None) -> str | None:
    """The class an ALTERED ledger row's detail records ("<class>: <evidence>"); None if none."""
    head = (detail or "").split(":", 1)[0].strip()
    return head if head in ALTERATION_CLASSES else None


class Transform(enum.IntEnum):
    NONE = 0
    X_UIDL = 1            # b"X-UIDL: " + pop3_uidl + b"\r\n" prepended


def x_uidl_header(pop3_uidl: str) -> bytes:
    """The exact bytes Transform.X_UIDL prepends to a message."""
    if not pop3_uidl or any(c in pop3_uidl for c in "\r\n"):
        raise ValueError(f"invalid POP3 UIDL {pop3_uidl!r}")
    return b"X-UIDL: " + pop3_uidl.encode("ascii") + b"\r\n"


class SysFlag(enum.IntFlag):
    SEEN = 1
    ANSWERED = 2
    FLAGGED = 4
    DELETED = 8
    DRAFT = 16


SYS_FLAGS_MAX = 31

#: IMAP spelling of each bit, in canonical output order
SYS_FLAG_NAMES: dict[SysFlag, str] = {
    SysFlag.SEEN: "\\Seen",
    SysFlag.ANSWERED: "\\Answered",
    SysFlag.FLAGGED: "\\Flagged",
    SysFlag.DELETED: "\\Deleted",
    SysFlag.DRAFT: "\\Draft",
}
_BY_LOWER = {name.lower(): bit for bit, name in SYS_FLAG_NAMES.items()}
#: session-only flags: reported by servers, never stored or APPENDed
SESSION_FLAGS = frozenset({"\\recent"})


def _text(flag: str | bytes) -> str:
    if isinstance(flag, (bytes, bytearray)):
        return bytes(flag).decode("utf-8", "surrogateescape")
    if isinstance(flag, str):
        return flag
    raise TypeError(f"IMAP flag must be str or bytes, not {type(flag).__name__}")


def flags_to_db(flags: Iterable[str | bytes] | None) -> tuple[int, list[str] | None]:
    """IMAP flags (as from FETCH FLAGS: str or bytes, any case) -> (sys_flags, keywords).

    The five system flags become bits (case-insensitively); ``\\Recent`` is
    dropped (session flag, cannot be APPENDed); everything else is a keyword,
    kept with its spelling, de-duplicated case-insensitively (IMAP keywords are
    case-insensitive) and sorted, so equal flag sets give equal rows.
    ``keywords`` is None when there are none (the column is NULL, never ``{}``);
    it is a list, which psycopg2 adapts to ``text[]``.
    """
    bits = 0
    keywords: dict[str, str] = {}
    for raw in flags or ():
        flag = _text(raw).strip()
        if not flag:
            continue
        low = flag.lower()
        bit = _BY_LOWER.get(low)
        if bit is not None:
            bits |= bit
        elif low in SESSION_FLAGS:
            continue
        else:
            keywords.setdefault(low, flag)
    kw = sorted(keywords.values(), key=lambda k: (k.lower(), k))
    return bits, (kw or None)


def db_to_flags(sys_flags: int, keywords: Iterable[str] | None = None) -> tuple[str, ...]:
    """(sys_flags, keywords) -> IMAP flag tuple: system flags in canonical order, then keywords."""
    if not 0 <= int(sys_flags) <= SYS_FLAGS_MAX:
        raise ValueError(f"sys_flags {sys_flags} outside 0..{SYS_FLAGS_MAX}")
    out = [name for bit, name in SYS_FLAG_NAMES.items() if sys_flags & bit]
    out.extend(keywords or ())
    return tuple(out)


def flags_equal(a: Iterable[str | bytes] | None, b: Iterable[str | bytes] | None) -> bool:
    """True if two IMAP flag lists mean the same stored flags (ignores case, order, \\Recent)."""
    sa, ka = flags_to_db(a)
    sb, kb = flags_to_db(b)
    return sa == sb and [k.lower() for k in ka or ()] == [k.lower() for k in kb or ()]


# -- proof vocabulary (the one place every caller reads it) --------------------------------
#: a mailbox's proof state, decided by mailshift.rules.proof.decide
PROVEN, WAIVED, NOT_PROVEN = "proven", "waived", "not_proven"
PROOF_STATES = (PROVEN, WAIVED, NOT_PROVEN)
#: states that let the gate pass for that mailbox
PROOF_OK = (PROVEN, WAIVED)
#: the verdict a verification run records in `proof.verdict` (a fact, not the state: the state
#: also weighs waivers given since, a stale ledger and the copy passes)
VERDICT_PROVEN, VERDICT_WITH_WAIVERS, VERDICT_FAILED = "proven", "proven_with_waivers", "failed"
#: `proof.kind`: before the cutover, or the final proof after the drain
PRE_CUTOVER, FINAL = "pre_cutover", "final"

# -- progress vocabulary: how far a building, a wave or a domain has come -------------------
# One set of words for the UI, the CLI and Slack. A building's state is derived from its
# summary row and its domain's MX swap (store.progress); a wave's or a domain's from its
# buildings' (`rollup_state`), so it follows the data instead of a stored label.
# (A namespace: COPIED alone is the ledger's MessageState above.)
class Progress:
    PLANNED, COPYING, COPIED, CUT_OVER, EMPTY = "planned", "copying", "copied", "cut_over", "empty"
    PROVEN = PROVEN      # the proof state's word: every mailbox proven or waived


#: in order of progress
PROGRESS_STATES = (Progress.PLANNED, Progress.COPYING, Progress.COPIED, Progress.PROVEN, Progress.CUT_OVER)
#: a building may also have no mailboxes at all
BUILDING_STATES = PROGRESS_STATES + (Progress.EMPTY,)


def rollup_state(buildings_by_state: dict[str, int]) -> str:
    """A wave's or a domain's state: the least advanced state of its buildings (empty ones
    aside), except that a group in which any building has started is `copying`, not `planned`."""
    present = [s for s in PROGRESS_STATES if buildings_by_state.get(s)]
    if not present:
        return Progress.PLANNED
    if present[0] == Progress.PLANNED and len(present) > 1:
        return Progress.COPYING
    return present[0]
