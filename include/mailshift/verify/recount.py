"""Read one side of a mailbox (source or destination) over IMAP, independently of the copier.

For every selectable folder: UIDVALIDITY and, per message, UID, size, flags, INTERNALDATE and a
digest. Bodies are fetched with BODY.PEEK[] (never sets \\Seen) in batches bounded by count and
bytes, hashed and dropped, so memory stays at one batch plus ~200 bytes per message.

Modes:
- ``full``: SHA-256 of the raw bytes of every message.
- ``sample``: SHA-256 of the header (BODY.PEEK[HEADER]) plus RFC822.SIZE for every message;
  the caller fetches full bodies for a random sample afterwards (`fetch_digests`).

A message that starts with an ``X-UIDL: ...\\r\\n`` line also gets the digest of the bytes after
that line (``stripped``), so a declared X-UIDL transformation can be reversed before matching. A
source message whose ledger row declares stale X-UIDL fields removed (`message.transform_detail`)
also gets the digest of exactly those bytes taken out (``declared``): the destination must hold
that behind its X-UIDL line, nothing more and nothing less.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from imapclient import IMAPClient

from mailshift.protocols.endpoint import Endpoint
from mailshift.protocols.imap.folders import SPECIAL_USES, Namespace, namespace_of
from mailshift.protocols.imap.session import (
    close_session,
    fetch_range,
    fetch_uids,
    open_session,
    translated_errors,
)
from mailshift.protocols.pop3 import open_pop3, pop3_entries, pop3_source_uids, retrieve
from mailshift.rules import states

BATCH_MESSAGES = 200
BATCH_BYTES = 8 * 1024 * 1024
MODES = ("full", "sample")

_MSGID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]{1,500}>)")
_X_UIDL = re.compile(rb"X-UIDL: ([^\r\n]{1,200})\r\n")
_ANY_X_UIDL = re.compile(rb"(?im)^x-uidl[ \t]*:")


@dataclass(slots=True)
class SideMessage:
    uid: int
    size: int
    flags: tuple                  # (sys_flags bits, lower-cased keywords tuple)
    raw_flags: tuple              # as the server said, for reports
    date: datetime | None
    key: bytes = b""              # full: sha256(body); sample: sha256(header)
    msgid: str | None = None
    x_uidl: str | None = None     # value of a leading X-UIDL line, if any
    stripped_key: bytes | None = None
    stripped_size: int | None = None
    full_digest: bytes | None = None   # sha256 of the whole body (always set in full mode)
    declared_key: bytes | None = None  # digest without exactly the declared X-UIDL fields (if any declared
    declared_size: int | None = None   # and they are where the ledger says; else None)


@dataclass
class SideFolder:
    name: str
    uidvalidity: int
    special_use: str | None
    messages: dict[int, SideMessage] = field(default_factory=dict)


@dataclass
class SideRead:
    namespace: Namespace
    folders: dict[str, SideFolder]           # server name -> folder
    special: dict[str, str]                  # role -> folder name (from SPECIAL-USE flags)
    listed_flags: dict[str, tuple]           # every LISTed name -> flags
    bytes_read: int = 0
    seconds: float = 0.0


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def norm_flags(flags) -> tuple:
    bits, kw = states.flags_to_db(flags)
    return bits, tuple(sorted(k.lower() for k in (kw or ())))


def header_of(body: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = body.find(sep)
        if i >= 0:
            return body[: i + len(sep)]
    return body


def remove_declared(raw: bytes, removed: list[tuple[int, bytes]]) -> bytes | None:
    """`raw` without exactly the X-UIDL header fields a ledger row declares removed ([(offset in
    the source message, bytes)], `message.transform_detail`, in offset order); None when the
    declaration does not fit these bytes (a field not at its offset, or not an X-UIDL field)."""
    parts, pos = [], 0
    for offset, chunk in removed:
        if offset < pos or raw[offset:offset + len(chunk)] != chunk or not _ANY_X_UIDL.match(chunk):
            return None
        parts.append(raw[pos:offset])
        pos = offset + len(chunk)
    parts.append(raw[pos:])
    return b"".join(parts)


def _digest_into(msg: SideMessage, data: bytes, mode: str, removed: list | None = None) -> None:
    """Fill key / msgid / x_uidl / stripped_* from the fetched bytes (body or header), and
    declared_* when the ledger declares X-UIDL fields removed from this source message."""
    digest = hashlib.sha256(data).digest()
    msg.key = digest
    if mode == "full":
        msg.full_digest = digest
    head = header_of(data) if mode == "full" else data
    m = _MSGID.search(head)
    msg.msgid = m.group(1).decode("ascii", "replace") if m else None
    if removed:
        clean = remove_declared(data, removed)
        if clean is not None:
            msg.declared_key = hashlib.sha256(clean).digest()
            msg.declared_size = msg.size - (len(data) - len(clean))
    if data.startswith(b"X-UIDL: "):
        x = _X_UIDL.match(data)
        if x:
            line = x.group(0)
            msg.x_uidl = x.group(1).decode("ascii", "replace")
            msg.stripped_key = hashlib.sha256(memoryview(data)[len(line):]).digest()
            msg.stripped_size = msg.size - len(line)


def _batches(meta: dict, batch_messages: int, batch_bytes: int):
    batch, size = [], 0
    for uid in sorted(meta):
        s = int(meta[uid].get(b"RFC822.SIZE", 0))
        if batch and (len(batch) >= batch_messages or size + s > batch_bytes):
            yield batch
            batch, size = [], 0
        batch.append(uid)
        size += s
    if batch:
        yield batch


def read_folder(client: IMAPClient, name: str, special_use: str | None, mode: str,
                batch_messages: int = BATCH_MESSAGES, batch_bytes: int = BATCH_BYTES,
                declared: dict | None = None) -> tuple[SideFolder, int]:
    """One folder; `declared` maps (folder name, UIDVALIDITY) -> {UID: X-UIDL fields removed}."""
    info = client.select_folder(name, readonly=True)
    folder = SideFolder(name, int(info[b"UIDVALIDITY"]), special_use)
    removals = (declared or {}).get((name, folder.uidvalidity), {})
    if not info.get(b"EXISTS"):
        return folder, 0
    meta = fetch_range(client, "1:*", ["RFC822.SIZE", "FLAGS", "INTERNALDATE"])
    section = "BODY.PEEK[]" if mode == "full" else "BODY.PEEK[HEADER]"
    answer = b"BODY[]" if mode == "full" else b"BODY[HEADER]"
    read = 0
    for batch in _batches(meta, batch_messages, batch_bytes):
        fetched = fetch_uids(client, batch, [section])
        for uid in batch:
            d = fetched.get(uid)
            if d is None or answer not in d:      # expunged between the two reads
                continue
            m = meta[uid]
            data = d[answer]
            msg = SideMessage(uid, len(data) if mode == "full" else int(m[b"RFC822.SIZE"]),
                              norm_flags(m.get(b"FLAGS", ())), tuple(_text(f) for f in m.get(b"FLAGS", ())),
                              m.get(b"INTERNALDATE"))
            _digest_into(msg, data, mode, removals.get(uid))
            folder.messages[uid] = msg
            read += len(data)
        del fetched
    return folder, read


def read_side(endpoint: Endpoint, login: str, mode: str = "full",
              batch_messages: int = BATCH_MESSAGES, batch_bytes: int = BATCH_BYTES,
              only: Callable[[str], bool] | None = None, declared: dict | None = None) -> SideRead:
    """Every selectable folder of `login` on `endpoint` (read-only); `declared`: see read_folder."""
    import time

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if not endpoint.imap:
        return read_pop3_side(endpoint, login, declared)
    started = time.monotonic()
    client = open_session(endpoint, login)
    client.normalise_times = False
    try:
        with translated_errors(f"verify {endpoint.label} as {login}"):
            ns = namespace_of(client)
            listing = client.list_folders()
            special, folders, listed = {}, {}, {}
            total = 0
            for flags, _, name in listing:
                fl = tuple(_text(f) for f in flags)
                listed[name] = fl
                role = next((f for f in fl if f in SPECIAL_USES), None)
                if role:
                    special.setdefault(role, name)
                if any(f.lower() in ("\\noselect", "\\nonexistent") for f in fl):
                    continue
                if only is not None and not only(name):
                    continue
                folder, n = read_folder(client, name, role, mode, batch_messages, batch_bytes, declared)
                folders[name] = folder
                total += n
            return SideRead(ns, folders, special, listed, total, time.monotonic() - started)
    finally:
        close_session(client)


def read_pop3_side(endpoint: Endpoint, login: str, declared: dict | None = None) -> SideRead:
    """A legacy system that offers only POP3, read as one folder INBOX (UIDVALIDITY 0) over
    UIDL, LIST and RETR (never DELE, no QUIT): full digests always; UIDs derived from the UIDLs
    exactly as the copier derives them; no flags, no INTERNALDATE (POP3 has neither)."""
    import time

    started = time.monotonic()
    folder = SideFolder("INBOX", 0, None)
    removals = (declared or {}).get(("INBOX", 0), {})
    read = 0
    with open_pop3(endpoint, login) as pop:
        for uid, entry in sorted(pop3_source_uids(pop3_entries(pop)).items()):
            raw = retrieve(pop, entry.number)
            msg = SideMessage(uid, len(raw), (0, ()), (), None)
            _digest_into(msg, raw, "full", removals.get(uid))
            folder.messages[uid] = msg
            read += len(raw)
    return SideRead(Namespace("", "/"), {"INBOX": folder}, {}, {"INBOX": ()}, read, time.monotonic() - started)


def fetch_digests(endpoint: Endpoint, login: str, wanted: dict[str, list[int]],
                  declared: dict | None = None) -> dict[tuple[str, int], SideMessage]:
    """Full SHA-256 (and stripped / declared digests) of the given UIDs per folder: the sample of
    sample mode; `declared`: see read_folder."""
    out: dict[tuple[str, int], SideMessage] = {}
    if not any(wanted.values()):
        return out
    if not endpoint.imap:  # a POP3-only side was read in full already: read it again, keep the wanted
        side = read_pop3_side(endpoint, login, declared).folders["INBOX"].messages
        return {(name, uid): side[uid] for name, uids in wanted.items() for uid in uids if uid in side}
    client = open_session(endpoint, login)
    client.normalise_times = False
    try:
        with translated_errors(f"verify sample {endpoint.label} as {login}"):
            for name, uids in wanted.items():
                if not uids:
                    continue
                info = client.select_folder(name, readonly=True)
                removals = (declared or {}).get((name, int(info[b"UIDVALIDITY"])), {})
                for start in range(0, len(uids), 50):
                    chunk = sorted(uids[start:start + 50])
                    for uid, d in fetch_uids(client, chunk, ["BODY.PEEK[]"]).items():
                        body = d.get(b"BODY[]")
                        if body is None:
                            continue
                        msg = SideMessage(uid, len(body), (0, ()), (), None)
                        _digest_into(msg, body, "full", removals.get(uid))
                        out[(name, uid)] = msg
    finally:
        close_session(client)
    return out


class BodyReader:
    """The raw bytes of a few named messages of one side, read-only (EXAMINE + BODY.PEEK[], or
    POP3 RETR for a POP3-only side): the verifier classifies an altered message from them. One
    session, opened on first use, closed with the reader."""

    def __init__(self, endpoint: Endpoint, login: str):
        self.endpoint, self.login = endpoint, login
        self._client: IMAPClient | None = None
        self._pop = None
        self._stack = contextlib.ExitStack()
        self._pop_numbers: dict[int, int] = {}

    def __enter__(self) -> BodyReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, folder: str, uids: list[int]) -> dict[int, bytes]:
        if not uids:
            return {}
        if not self.endpoint.imap:
            return self._pop3(uids)
        if self._client is None:
            self._client = open_session(self.endpoint, self.login)
        with translated_errors(f"verify {self.endpoint.label} as {self.login}"):
            self._client.select_folder(folder, readonly=True)
            got = fetch_uids(self._client, sorted(uids), ["BODY.PEEK[]"])
        return {uid: d[b"BODY[]"] for uid, d in got.items() if b"BODY[]" in d}

    def _pop3(self, uids: list[int]) -> dict[int, bytes]:
        if self._pop is None:
            self._pop = self._stack.enter_context(open_pop3(self.endpoint, self.login))
            self._pop_numbers = {u: e.number for u, e in pop3_source_uids(pop3_entries(self._pop)).items()}
        return {u: retrieve(self._pop, self._pop_numbers[u]) for u in uids if u in self._pop_numbers}

    def close(self) -> None:
        client, self._client = self._client, None
        close_session(client)
        self._pop = None
        self._stack.close()
