"""Read-only POP3: the legacy UIDL list, and its mapping to IMAP UIDs of INBOX.

Only UIDL, LIST, STAT and TOP are ever sent. Never RETR: Dovecot marks a message \\Seen on
RETR even without QUIT, and the legacy mailbox stays live until the cutover.
"""

from __future__ import annotations

import base64
import contextlib
import poplib
from dataclasses import dataclass

from mailshift.errors import AuthError, ConfigError, ProtocolError, TransientError
from mailshift.protocols.endpoint import Endpoint


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
        if user_password is None:
            raise ConfigError(f"POP3 {endpoint.label}: auth=user needs the password of {login}")
        conn.user(login)
        conn.pass_(user_password)


def read_uidls(endpoint: Endpoint, login: str, user_password: str | None = None) -> list[Pop3Entry]:
    """The mailbox's POP3 view: message number, size and UIDL, in server order."""
    what = f"POP3 {endpoint.label} as {login}"
    try:
        conn = _connect(endpoint)
    except OSError as exc:
        raise TransientError(f"{what}: {exc}") from exc
    try:
        try:
            _login(conn, endpoint, login, user_password)
        except poplib.error_proto as exc:
            raise AuthError(f"{what}: login refused: {exc}") from exc
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
    except OSError as exc:
        raise TransientError(f"{what}: {exc}") from exc
    except poplib.error_proto as exc:
        raise ProtocolError(f"{what}: {exc}") from exc
    finally:
        # QUIT would commit deletions; we never delete, but leave without it anyway to
        # make sure nothing of this session is ever committed on the legacy server.
        with contextlib.suppress(Exception):
            conn.close()


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
