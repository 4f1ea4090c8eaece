"""APPEND that keeps bytes exact and reports what the destination said.

imapclient's `append` goes through imaplib, which rewrites bare LF to CRLF: bytes would change.
Its `multiappend` sends raw literals (LITERAL+ when offered) and is what we use for batches.
A message larger than the advertised APPENDLIMIT goes alone with a synchronizing literal, so
the server can refuse it before we send the bytes and the protocol stays in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from imapclient import IMAPClient
from imapclient.datetime_util import datetime_to_INTERNALDATE
from imapclient.imapclient import _literal as Literal  # imapclient's marker: always send as a literal
from imapclient.imapclient import seq_to_parenstr
from imapclient.util import to_bytes

from mailshift.errors import ProtocolError

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.I)
_APPENDLIMIT = re.compile(rb"^APPENDLIMIT=(\d+)$", re.I)


@dataclass(frozen=True)
class OutgoingMessage:
    flags: tuple
    internal_date: datetime
    data: bytes


@dataclass(frozen=True)
class AppendOutcome:
    ok: bool
    text: str                      # the server's words (tagged response text)
    uidvalidity: int | None = None
    uids: tuple[int, ...] = ()     # APPENDUID uids in the order of the messages


def appendlimit(client: IMAPClient) -> int | None:
    """The destination's advertised maximum message size (RFC 7889), if any."""
    for cap in client.capabilities():
        m = _APPENDLIMIT.match(cap)
        if m:
            return int(m.group(1))
    return None


def parse_uid_set(text: bytes) -> list[int]:
    out = []
    for part in text.split(b","):
        if b":" in part:
            lo, hi = (int(x) for x in part.split(b":"))
            out.extend(range(min(lo, hi), max(lo, hi) + 1))
        else:
            out.append(int(part))
    return out


def _outcome(typ: str, data: list) -> AppendOutcome:
    raw = b" ".join(d if isinstance(d, bytes) else str(d).encode() for d in data if d is not None)
    text = raw.decode("utf-8", "replace")
    if typ != "OK":
        return AppendOutcome(False, text)
    m = _APPENDUID.search(raw)
    if not m:
        return AppendOutcome(True, text)
    return AppendOutcome(True, text, int(m.group(1)), tuple(parse_uid_set(m.group(2))))


def _quoted_date(when: datetime) -> bytes:
    return b'"' + datetime_to_INTERNALDATE(when).encode("ascii") + b'"'


def _clean_flags(flags: tuple) -> tuple:
    return tuple(f for f in flags if (f.decode() if isinstance(f, bytes) else f).lower() != "\\recent")


def _flags_and_date(message: OutgoingMessage) -> bytes:
    """`(flags) "date"` of one message in an APPEND command."""
    return to_bytes(seq_to_parenstr(_clean_flags(message.flags))) + b" " + _quoted_date(message.internal_date)


def multiappend(client: IMAPClient, folder: str, messages: list[OutgoingMessage]) -> AppendOutcome:
    """All messages in one APPEND command (RFC 3502: all land or none does)."""
    if len(messages) == 1 or not client.has_capability("MULTIAPPEND"):
        if len(messages) != 1:
            raise ProtocolError("server lacks MULTIAPPEND; call append_one per message")
        return append_one(client, folder, messages[0], synchronizing=False)
    typ, data = client.multiappend(
        folder,
        [{"msg": m.data, "flags": _clean_flags(m.flags), "date": m.internal_date} for m in messages],
    )
    return _outcome(typ, data)


def append_one(client: IMAPClient, folder: str, message: OutgoingMessage,
               synchronizing: bool = True) -> AppendOutcome:
    """One message; with a synchronizing literal the server may say NO before the bytes go."""
    imap = client._imap
    if not synchronizing and client.has_capability("LITERAL+"):
        typ, data = client._raw_command(
            b"APPEND",
            [client._normalise_folder(folder),
             to_bytes(seq_to_parenstr(_clean_flags(message.flags))),
             _quoted_date(message.internal_date),
             Literal(message.data)],
            uid=False,
        )
        return _outcome(typ, data)
    tag = imap._new_tag()
    head = b" ".join([to_bytes(tag), b"APPEND", client._normalise_folder(folder), _flags_and_date(message),
                      b"{" + str(len(message.data)).encode() + b"}"])
    imap.send(head + b"\r\n")
    # Wait for "+ go ahead" or an early tagged refusal.
    while imap._get_response():
        if imap.tagged_commands.get(tag):
            typ, data = imap._command_complete("APPEND", tag)
            return _outcome(typ, data)
    imap.send(message.data + b"\r\n")
    typ, data = imap._command_complete("APPEND", tag)
    return _outcome(typ, data)


def multiappend_in_order(client: IMAPClient, folder: str, messages: list[OutgoingMessage],
                         wait_turn=None) -> AppendOutcome:
    """MULTIAPPEND whose commit waits its turn: every literal is sent at once (LITERAL+), but
    the CRLF that ends the command, and so commits it, only after `wait_turn()` returns.

    Why: a destination stores each message as its literal arrives and assigns UIDs when the
    command ends. Two connections can therefore store two batches of one folder at the same
    time while UIDs still follow the order of the batches: batch k+1 cannot get UIDs before
    its command ends, which is after batch k was answered. `wait_turn()` raises to abandon the
    batch; the caller must then drop the connection without ending the command, so the
    destination discards it (nothing of it is committed).
    """
    if wait_turn is None or not client.has_capability("LITERAL+") or len(messages) == 1:
        if wait_turn is not None:
            wait_turn()
        return multiappend(client, folder, messages)
    imap = client._imap
    tag = imap._new_tag()
    parts = [to_bytes(tag), b" APPEND ", client._normalise_folder(folder)]
    for m in messages:
        parts += [b" ", _flags_and_date(m), b" {", str(len(m.data)).encode("ascii"), b"+}\r\n", m.data]
    imap.send(b"".join(parts))
    wait_turn()
    imap.send(b"\r\n")
    typ, data = imap._command_complete("APPEND", tag)
    return _outcome(typ, data)


# -- what the destination stored (classes: `rules.states.ALTERATION_CLASSES`) ---------------


def _header_length(data: bytes) -> int:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return i + len(sep)
    return len(data)


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def classify_alteration(appended: bytes, stored: bytes) -> tuple[str, str]:
    """(class, byte-level evidence) of a stored message that is not the appended bytes.

    - `truncated`: the stored bytes are a strict prefix of the appended ones;
    - `line_endings`: equal once both have CRLF line ends (bare LF/CR normalised);
    - `header_bytes_replaced`: same length, every difference in the header section, and every
      appended byte that differs is an 8-bit byte (e.g. raw UTF-8 rewritten to `X`);
    - `other`: anything else.
    The evidence names sizes, the stored digest, the first differing offset and a few bytes of
    both sides there (hex), and how many bytes differ."""
    import hashlib

    if len(stored) < len(appended) and appended.startswith(stored):
        cls = "truncated"
    elif _crlf(appended) == _crlf(stored):
        cls = "line_endings"
    elif len(stored) == len(appended) and all(
            i < _header_length(appended) and appended[i] >= 0x80
            for i in range(len(appended)) if appended[i] != stored[i]):
        cls = "header_bytes_replaced"
    else:
        cls = "other"
    first = next((i for i, (a, b) in enumerate(zip(appended, stored, strict=False)) if a != b),
                 min(len(appended), len(stored)))
    differ = sum(1 for a, b in zip(appended, stored, strict=False) if a != b) + abs(len(appended) - len(stored))
    evidence = (f"stored {len(stored)} bytes sha256 {hashlib.sha256(stored).hexdigest()}, appended {len(appended)} "
                f"bytes; first difference at byte {first}: appended {appended[first:first + 16].hex() or '-'} "
                f"stored {stored[first:first + 16].hex() or '-'}; {differ} byte(s) differ")
    return cls, evidence


def read_back(client: IMAPClient, folder: str, uids: list[int]) -> dict[int, bytes]:
    """The bytes the destination now serves for `uids` of `folder` (EXAMINE, BODY.PEEK[])."""
    from mailshift.protocols.imap.session import fetch_uids

    client.select_folder(folder, readonly=True)
    return {uid: d[b"BODY[]"] for uid, d in fetch_uids(client, uids, ["BODY.PEEK[]"]).items() if b"BODY[]" in d}
