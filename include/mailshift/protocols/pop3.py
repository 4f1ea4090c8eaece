"""Read-only POP3: the legacy UIDL list, its mapping to IMAP UIDs of INBOX, and (for a legacy
system that offers only POP3) the messages themselves.

Only UIDL, LIST, STAT and TOP are ever sent: never RETR, DELE or QUIT. QUIT is what commits a
POP3 session, and RETR changes state on real servers (Dovecot marks the message \\Seen even
without QUIT; servers with the old LAST command count it as accessed), so a message is read
with `TOP n <all lines>`, which has no such effect: nothing of a session shows on the server.
Sessions are opened in one place (`open_pop3`), with the same credentials and identity proof
as IMAP sessions (`mailshift.protocols.imap.session.prove_login_method`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import poplib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailshift.errors import AuthError, ConfigError, ProtocolError
from mailshift.protocols import faults
from mailshift.protocols.endpoint import Endpoint, mailbox_password


@dataclass(frozen=True)
class Pop3Entry:
    number: int
    size: int
    uidl: str


def _connect(endpoint: Endpoint) -> poplib.POP3:
    if endpoint.pop3_port is None:
        raise ConfigError(f"{endpoint.label}: no pop3_port in the connection URI")
    tls = endpoint.pop3_tls or ("none" if endpoint.tls == "none" else "starttls")
    ctx = endpoint.ssl_context() if tls != "none" else None
    if tls == "imaps" or tls == "pop3s":
        return poplib.POP3_SSL(endpoint.host, endpoint.pop3_port, context=ctx, timeout=endpoint.timeout)
    conn = poplib.POP3(endpoint.host, endpoint.pop3_port, timeout=endpoint.timeout)
    if tls == "starttls":
        try:
            offers = b"STLS" in conn.capa()
        except poplib.error_proto:
            offers = False
        if not offers:
            with contextlib.suppress(Exception):
                conn.close()
            raise ConfigError(f"POP3 {endpoint.host}:{endpoint.pop3_port}: the server does not offer STLS; "
                              "refusing to send a password in clear: enable TLS on it or set pop3_tls=pop3s")
        conn.stls(context=ctx)
    return conn


def _login(conn: poplib.POP3, endpoint: Endpoint, login: str, user_password: str | None) -> None:
    if endpoint.auth == "master":
        conn.user(f"{login}{endpoint.master_separator}{endpoint.admin_user}")
        conn.pass_(endpoint.password)
    elif endpoint.auth == "authzid":
        token = base64.b64encode(f"{login}\0{endpoint.admin_user}\0{endpoint.password}".encode()).decode()
        conn._shortcmd(f"AUTH PLAIN {token}")
    else:
        conn.user(login)
        conn.pass_(user_password or mailbox_password(endpoint, login))


def _label(endpoint: Endpoint) -> str:
    return f"{endpoint.host}:{endpoint.pop3_port}"


def _translated(what: str):
    return faults.translated(what, tls_option="pop3_tls", protocol_errors=(poplib.error_proto,))


def _pop3_probe(endpoint: Endpoint, name: str, what: str) -> bool:
    """True if the server lets the admin credentials in as the non-existent mailbox `name`."""
    with _translated(what):
        conn = _connect(endpoint)
        try:
            _login(conn, endpoint, name, None)
            return True
        except poplib.error_proto:
            return False
        finally:
            with contextlib.suppress(Exception):
                conn.close()


def prove_pop3(endpoint: Endpoint, login: str) -> None:
    """The identity probe of a POP3 server, before a session as `login` (see
    `session.prove_login_method`)."""
    from mailshift.protocols.imap.session import prove_login_method

    what = f"POP3 {_label(endpoint)} as {login}"
    prove_login_method(endpoint, "POP3", lambda ep, name: _pop3_probe(ep, name, what))


@contextlib.contextmanager
def open_pop3(endpoint: Endpoint, login: str, user_password: str | None = None):
    """A POP3 session proven to be `login` (the ONE place POP3 sessions are opened); closed
    without QUIT on exit, so nothing of it is ever committed."""
    from mailshift.protocols.imap.session import prove_login_method

    what = f"POP3 {_label(endpoint)} as {login}"
    if endpoint.auth == "user" and user_password is None:
        user_password = mailbox_password(endpoint, login)
    prove_login_method(endpoint, "POP3", lambda ep, name: _pop3_probe(ep, name, what))
    with _translated(what):
        conn = _connect(endpoint)
    try:
        with _translated(what):
            try:
                _login(conn, endpoint, login, user_password)
            except poplib.error_proto as exc:
                raise AuthError(f"{what}: login refused: {exc}") from exc
            yield conn
    finally:
        # QUIT would commit deletions; we never delete, but leave without it anyway to
        # make sure nothing of this session is ever committed on the legacy server.
        with contextlib.suppress(Exception):
            conn.close()


def pop3_entries(conn: poplib.POP3) -> list[Pop3Entry]:
    """UIDL and LIST of an open session: (number, size, UIDL) in server order."""
    sizes = {}
    for line in conn.list()[1]:
        num, size = line.split()[:2]
        sizes[int(num)] = int(size)
    entries = []
    for line in conn.uidl()[1]:
        num, uidl = line.split(maxsplit=1)
        n = int(num)
        entries.append(Pop3Entry(n, sizes.get(n, -1), uidl.decode("ascii", "replace")))
    return entries


def read_uidls(endpoint: Endpoint, login: str, user_password: str | None = None) -> list[Pop3Entry]:
    """The mailbox's POP3 view: message number, size and UIDL, in server order."""
    with open_pop3(endpoint, login, user_password) as conn:
        return pop3_entries(conn)


def pop3_uid(uidl: str) -> int:
    """A stable 56-bit source UID for a POP3-only message, derived from its UIDL (which the
    server keeps for the message's life), so the ledger's (folder, src_uid) key works unchanged."""
    return int.from_bytes(hashlib.sha256(uidl.encode("utf-8", "surrogateescape")).digest()[:7], "big") or 1


def pop3_source_uids(entries: list[Pop3Entry]) -> dict[int, Pop3Entry]:
    """src_uid -> entry; ProtocolError on a duplicated UIDL (RFC 1939 forbids it)."""
    out: dict[int, Pop3Entry] = {}
    for e in entries:
        uid = pop3_uid(e.uidl)
        if uid in out:
            raise ProtocolError(f"POP3 UIDL {e.uidl!r} of message {e.number} repeats message {out[uid].number}'s: "
                                "the server's UIDLs are not unique, refusing to guess")
        out[uid] = e
    return out


def message_date(raw: bytes) -> datetime.datetime:
    """The instant a POP3 message has no INTERNALDATE for: its Date header, else the epoch of
    the first Received line, else now (UTC)."""
    from email.parser import BytesHeaderParser
    from email.utils import parsedate_to_datetime

    head = BytesHeaderParser().parsebytes(raw[:65536])
    for value in [head.get("Date")] + [r.rsplit(";", 1)[-1] for r in head.get_all("Received") or []]:
        try:
            when = parsedate_to_datetime(str(value).strip()) if value else None
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)
    return datetime.datetime.now(datetime.UTC)


#: body lines asked of TOP: more than any message has, below 2**31 for servers that parse an int
ALL_LINES = 1_000_000_000


def retrieve(conn: poplib.POP3, number: int) -> bytes:
    """The raw bytes of message `number` (`TOP number ALL_LINES`; dot-unstuffed, lines joined with
    CRLF). A server without TOP is a protocol error naming it: RETR is not a silent fallback."""
    try:
        _resp, lines, _octets = conn.top(number, ALL_LINES)
    except poplib.error_proto as exc:
        words = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ProtocolError(f"POP3 {getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}: TOP {number} refused "
                            f"({words}); mailshift reads POP3-only mailboxes with TOP only, "
                            "because RETR marks messages read on the legacy server") from exc
    return b"".join(line + b"\r\n" for line in lines)


def read_messages(conn: poplib.POP3, entries: list[Pop3Entry]) -> Iterator[tuple[Pop3Entry, bytes]]:
    """(entry, raw bytes) for each entry, in order (a POP3-only source)."""
    for entry in entries:
        yield entry, retrieve(conn, entry.number)


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_XUIDL_FIELD = re.compile(rb"(?im)^x-uidl[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*")


def strip_x_uidl_fields(raw: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """`raw` without any `X-UIDL:` header field (folded lines included), and what was removed:
    [(offset in raw, the exact bytes)]. Only the header section is looked at (up to the first
    empty line); a body line that happens to start with "X-UIDL:" is content, not a header."""
    end = _HEADER_END.search(raw)
    # up to and including the last header line's line break; the empty line itself stays
    head_end = (end.start() + (2 if raw[end.start():end.start() + 1] == b"\r" else 1)) if end else len(raw)
    removed = [(m.start(), m.group(0)) for m in _XUIDL_FIELD.finditer(raw, 0, head_end)]
    if not removed:
        return raw, []
    parts, pos = [], 0
    for offset, chunk in removed:
        parts.append(raw[pos:offset])
        pos = offset + len(chunk)
    parts.append(raw[pos:])
    return b"".join(parts), removed


def restore_x_uidl_fields(clean: bytes, removed: list[tuple[int, bytes]]) -> bytes:
    """The inverse of `strip_x_uidl_fields`: put the removed bytes back at their offsets."""
    out, pos = bytearray(), 0
    for offset, chunk in removed:
        take = offset - len(out)
        out += clean[pos:pos + take]
        pos += take
        out += chunk
    out += clean[pos:]
    return bytes(out)


def map_uidls_to_uids(entries: list[Pop3Entry], inbox: list[tuple[int, int]]) -> dict[int, str]:
    """Pair POP3 message n with the n-th INBOX message (UID order), checking every size.

    `inbox` is [(uid, rfc822_size)] sorted by UID. Dovecot and Courier both number POP3
    messages in INBOX order; the size check catches a server that does not, or mail that
    arrived between the two reads, and then we refuse rather than guess.
    """
    if len(entries) != len(inbox):
        raise ProtocolError(f"POP3 shows {len(entries)} messages, IMAP INBOX {len(inbox)}: "
                            "mailbox changed during the read, or POP3 hides messages")
    mapping = {}
    for entry, (uid, size) in zip(entries, inbox, strict=True):
        if entry.size != size:
            raise ProtocolError(f"POP3 message {entry.number} is {entry.size} bytes but IMAP UID {uid} "
                                f"is {size}: POP3 and IMAP orders disagree")
        mapping[uid] = entry.uidl
    return mapping
