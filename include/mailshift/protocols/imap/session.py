"""Open an authenticated IMAP session as one mailbox, and turn library errors into ours.

imapclient does the protocol; this module decides TLS, the login method (master user, SASL
PLAIN with an authorization identity, or the user's own password) and which failures are
worth a retry (`TransientError`) and which are not (`AuthError`, `ConfigError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import imaplib
import json
import os
import re
import secrets
import socket
import threading
import time

from imapclient import IMAPClient
from imapclient import exceptions as imapexc
from imapclient.fixed_offset import FixedOffset

from mailshift import settings
from mailshift.errors import AuthError, ConfigError, IdentityMismatch
from mailshift.protocols import faults
from mailshift.protocols.endpoint import Endpoint, mailbox_password

_NETWORK_ERRORS = (OSError, socket.timeout, imaplib.IMAP4.abort, imapexc.IMAPClientAbortError, EOFError)


def translated_errors(what: str):
    """Re-raise network and protocol failures as mailshift errors naming `what` (no secrets)."""
    return faults.translated(what, tls_option="the connection's `tls` option (starttls/imaps)",
                             login_errors=(imapexc.LoginError,), network_errors=_NETWORK_ERRORS,
                             protocol_errors=(imaplib.IMAP4.error,), words=_words)


def _words(exc: Exception) -> str:
    text = str(exc)
    return text[:300]


def open_session(endpoint: Endpoint, login: str, user_password: str | None = None) -> IMAPClient:
    """Connect, secure, prove the server honours the login method, and log in as `login`.

    The ONE place IMAP sessions are opened (copier, lanes, preflight, verifier): a session is
    returned only when it is provably the mailbox `login` (see `prove_login_method`); otherwise
    IdentityMismatch before any byte of mail is read. The caller closes it with `close_session`.
    """
    what = f"IMAP {endpoint.label} as {login}"
    if not endpoint.imap:
        raise ConfigError(f"{endpoint.label} offers no IMAP (imap=false): only the POP3 copier reads it")
    if endpoint.auth == "user" and user_password is None:
        user_password = mailbox_password(endpoint, login)
    prove_login_method(endpoint, "IMAP", lambda ep, name: _imap_probe(ep, name, what))
    with translated_errors(what):
        client = _connect(endpoint, what)
        try:
            _login(client, endpoint, login, user_password)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client


def _connect(endpoint: Endpoint, what: str) -> IMAPClient:
    """A connected, secured, not yet authenticated client."""
    ctx = endpoint.ssl_context() if endpoint.tls != "none" else None
    client = IMAPClient(endpoint.host, port=endpoint.port, ssl=endpoint.tls == "imaps", ssl_context=ctx,
                        timeout=endpoint.timeout)
    quiet_imaplib(client)
    try:
        if endpoint.tls == "starttls":
            if not client.has_capability("STARTTLS"):
                raise ConfigError(f"{what}: the server does not offer STARTTLS; refusing to send a password in "
                                  "clear: enable TLS on it or set the connection's tls=imaps")
            client.starttls(ctx)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


# -- identity: a login method the server cannot silently defeat -------------------------------
PROBE_PREFIX = "mailshift-identity-probe-"
PROBE_TIMEOUT = 15.0
_probe_lock = threading.Lock()
_probed: dict[tuple, float] = {}


def probe_identity() -> str:
    """A login name no real mailbox has (random suffix), for the identity probe."""
    return PROBE_PREFIX + secrets.token_hex(6)


def prove_login_method(endpoint: Endpoint, protocol: str, probe) -> None:
    """Refuse a server that would log us in as someone else than asked.

    `auth=master` and `auth=authzid` ask the server to act for a mailbox. A server that ignores
    the authorization identity (or the master-user separator), or grants it for names that do
    not exist, logs in anyway — into the wrong mailbox. So, before the first session of a server
    (again after `$MAILSHIFT_IDENTITY_PROBE_TTL` seconds, default 21600: 6 h, shared by the
    processes of a user through a cache file, see `_cache_file`), `probe(endpoint, name)`
    logs in with the same credentials as a random, non-existent mailbox: it must be refused. If
    it is accepted, no session of that server is proven: IdentityMismatch. `auth=user` logs in
    with the mailbox's own password: the server authenticates exactly that identity.
    """
    if endpoint.auth == "user":
        return
    port = endpoint.port if protocol == "IMAP" else endpoint.pop3_port
    key = (protocol, endpoint.host, port, endpoint.auth, endpoint.admin_user, endpoint.master_separator)
    ttl = settings.get_float(settings.IDENTITY_PROBE_TTL, 21600.0)
    if _recently_proven(key, ttl):
        return
    name = probe_identity()
    # servers delay a refused login on purpose (Dovecot: auth_failure_delay, 2 s): the probe's
    # refusal is the expected answer, so it gets a longer timeout than the endpoint's
    if probe(dataclasses.replace(endpoint, timeout=max(endpoint.timeout, PROBE_TIMEOUT)), name):
        method = "SASL PLAIN with authorization identity" if endpoint.auth == "authzid" else "master-user login"
        raise IdentityMismatch(
            f"{protocol} {endpoint.host}:{port}: the server accepted a {method} for the non-existent mailbox {name!r}: "
            f"it ignores or does not check the identity asked for, so no session proves its mailbox; nothing "
            f"was read: use auth=user with per-mailbox credentials, or fix the server's {endpoint.auth} setup")
    _remember_proven(key)


def prove_endpoints(*sessions: tuple[Endpoint, str]) -> None:
    """Run the identity probes of several servers at once (each is a refused login, which servers
    delay on purpose: Dovecot 2 s), so a copy pass waits for the slowest, not for their sum.
    `sessions` are (endpoint, login) pairs: errors name the session the probe is for. Raises the
    first IdentityMismatch (or connection error) found."""
    from concurrent.futures import ThreadPoolExecutor

    from mailshift.protocols.pop3 import prove_pop3

    def one(endpoint: Endpoint, login: str) -> None:
        if endpoint.imap:
            what = f"IMAP {endpoint.label} as {login}"
            prove_login_method(endpoint, "IMAP", lambda ep, name: _imap_probe(ep, name, what))
        else:
            prove_pop3(endpoint, login)

    todo = [(e, login) for e, login in sessions if e.auth != "user"]
    if len(todo) < 2:
        for e, login in todo:
            one(e, login)
        return
    with ThreadPoolExecutor(len(todo), thread_name_prefix="identity-probe") as pool:
        for future in [pool.submit(one, e, login) for e, login in todo]:
            future.result()


def forget_probes() -> None:
    """Forget every probe result (tests; or after a server's configuration changed)."""
    with _probe_lock:
        _probed.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_cache_file())


# A refused login is what the probe wants, but servers count it: Dovecot's auth penalty delays
# every later login from the same IP (2 s, doubling up to 15 s), fail2ban-style guards may ban.
# So a server's answer is kept across processes (every Airflow task is one) in a per-user file,
# mode 0600: one probe per server per TTL, not one per process.
def _cache_file() -> str:
    return str(settings.identity_probe_cache_dir() / "identity-probes.json")


def _recently_proven(key: tuple, ttl: float) -> bool:
    with _probe_lock:
        if time.monotonic() - _probed.get(key, -1e18) < ttl:
            return True
    try:
        with open(_cache_file(), encoding="utf-8") as f:
            when = json.load(f).get(json.dumps(key))
    except (OSError, ValueError):
        return False
    return isinstance(when, (int, float)) and 0 <= time.time() - when < ttl


def _remember_proven(key: tuple) -> None:
    with _probe_lock:
        _probed[key] = time.monotonic()
        path = _cache_file()
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                data = {}
            data[json.dumps(key)] = time.time()
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except OSError:  # no cache: probes are then per process, still correct
            pass


def _imap_probe(endpoint: Endpoint, name: str, what: str) -> bool:
    """True if the server lets the admin credentials in as the non-existent mailbox `name`
    (`what` names the session the probe is for, in errors)."""
    with translated_errors(what):
        client = _connect(endpoint, what)
        try:
            _login(client, endpoint, name, None)
            return True
        except (AuthError, imapexc.LoginError):
            return False
        finally:
            with contextlib.suppress(Exception):
                client.logout()
            with contextlib.suppress(Exception):
                client.shutdown()


def quiet_imaplib(client: IMAPClient) -> None:
    """Stop imaplib from formatting every command and response for a debug log nobody reads.

    imapclient sets imaplib's `debug = 5` and routes its messages to the `imapclient.imaplib`
    logger, so imaplib builds the repr of every response and every sent literal — the full
    bytes of each message — and the logger then throws it away. That was about a third of a
    FETCH's CPU. The protocol trace comes back when that logger is set to DEBUG.
    """
    import logging

    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        client._imap.debug = 0


def _login(client: IMAPClient, endpoint: Endpoint, login: str, user_password: str | None) -> None:
    if endpoint.auth == "master":
        client.login(f"{login}{endpoint.master_separator}{endpoint.admin_user}", endpoint.password)
    elif endpoint.auth == "authzid":
        try:
            client.plain_login(endpoint.admin_user, endpoint.password, authorization_identity=login)
        except imapexc.IMAPClientError as exc:
            raise AuthError(f"IMAP {endpoint.label} as {login}: SASL PLAIN refused: {_words(exc)}") from exc
    else:
        if user_password is None:
            raise ConfigError(f"IMAP {endpoint.label}: auth=user needs the password of {login}")
        client.login(login, user_password)


def close_session(client: IMAPClient | None) -> None:
    """Log out politely; a dead connection is just dropped."""
    if client is None:
        return
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()


def fetch_range(client: IMAPClient, uid_range: str, items: list[str]) -> dict:
    """UID FETCH over a range like "1:*" (imapclient's fetch only takes explicit UIDs).

    Note the IMAP rule that "n:*" always includes the highest UID, even when it is < n:
    callers filter.
    """
    from imapclient.imapclient import seq_to_parenstr_upper

    imap = client._imap
    tag = imap._command("UID", "FETCH", uid_range, seq_to_parenstr_upper(items))
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    return parse_fetch(data, client.normalise_times)


def fetch_uids(client: IMAPClient, uids: list[int], items: list[str]) -> dict:
    """UID FETCH of explicit UIDs, parsed like `fetch_range` (imapclient's `fetch` result)."""
    if not uids:
        return {}
    return fetch_range(client, ",".join(str(u) for u in uids), items)


def parse_fetch(data: list, normalise_times: bool = False) -> dict:
    """Parse FETCH responses; the common shapes fast, anything else by imapclient.

    imapclient's parser tokenises every response in Python; for the two shapes the copier reads
    by the thousand (UID/RFC822.SIZE/FLAGS/INTERNALDATE lines, and UID + one BODY[] literal)
    a strict regular-expression parser gives the same result at a fraction of the CPU. Any
    response it does not recognise completely sends the whole batch to imapclient.
    """
    from imapclient.response_parser import parse_fetch_response

    if not normalise_times:
        fast = _parse_fetch_fast(data)
        if fast is not None:
            return fast
    return parse_fetch_response(data, normalise_times, True)


_HEAD = re.compile(rb"(\d+) \(")
_ITEM = re.compile(rb' ?(?:(UID|RFC822\.SIZE) (\d+)|FLAGS \(([^()"{}]*)\)|INTERNALDATE "([^"\\]*)")')
_BODY_LITERAL = re.compile(rb" ?BODY\[\] \{(\d+)\}\Z")
_DATE = re.compile(rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z")
_MONTHS = {m: i for i, m in enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_ZONES: dict = {}


def _items(text: bytes, pos: int, end: int, out: dict) -> int | None:
    """Consume known items of text[pos:end] into out; return where it stopped (None: unknown)."""
    while pos < end:
        m = _ITEM.match(text, pos, end)
        if not m:
            return pos
        if m.group(1) is not None:
            out[m.group(1)] = int(m.group(2))
        elif m.group(3) is not None:
            out[b"FLAGS"] = tuple(m.group(3).split())
        else:
            when = _internaldate(m.group(4))
            if when is None:
                return None
            out[b"INTERNALDATE"] = when
        pos = m.end()
    return pos


def _internaldate(text: bytes):
    m = _DATE.match(text)
    month = _MONTHS.get(m.group(2).capitalize()) if m else None
    if month is None:
        return None
    minutes = int(m.group(8)) * 60 + int(m.group(9))
    minutes = -minutes if m.group(7) == b"-" else minutes
    zone = _ZONES.get(minutes)
    if zone is None:
        zone = _ZONES[minutes] = FixedOffset(minutes)
    return datetime.datetime(int(m.group(3)), month, int(m.group(1)), int(m.group(4)), int(m.group(5)),
                             int(m.group(6)), tzinfo=zone)


def _parse_fetch_fast(data: list) -> dict | None:
    out: dict = {}
    i = 0
    while i < len(data):
        item = data[i]
        if item is None:
            i += 1
            continue
        if isinstance(item, tuple):  # (b'7 (UID 9 ... BODY[] {n}', literal) then b')'
            head, literal = item
            if i + 1 >= len(data) or data[i + 1] != b")":
                return None
            m = _HEAD.match(head)
            body = _BODY_LITERAL.search(head)
            if not m or not body or int(body.group(1)) != len(literal):
                return None
            msg = {b"SEQ": int(m.group(1))}
            if _items(head, m.end(), body.start(), msg) != body.start():
                return None
            msg[b"BODY[]"] = literal
            i += 2
        else:
            m = _HEAD.match(item)
            if not m or not item.endswith(b")"):
                return None
            msg = {b"SEQ": int(m.group(1))}
            if _items(item, m.end(), len(item) - 1, msg) != len(item) - 1:
                return None
            i += 1
        uid = msg.pop(b"UID", None)
        if uid is None:
            return None
        out.setdefault(uid, {}).update(msg)  # as imapclient: two responses for a UID merge
    return out
