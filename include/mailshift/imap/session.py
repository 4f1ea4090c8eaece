"""Open an authenticated IMAP session as one mailbox, and turn library errors into ours.

imapclient does the protocol; this module decides TLS, the login method (master user, SASL
PLAIN with an authorization identity, or the user's own password) and which failures are
worth a retry (`TransientError`) and which are not (`AuthError`, `ConfigError`).
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl

from imapclient import IMAPClient
from imapclient import exceptions as imapexc

from .endpoint import Endpoint
from .errors import AuthError, ConfigError, ProtocolError, TransientError

_NETWORK_ERRORS = (OSError, socket.timeout, imaplib.IMAP4.abort, imapexc.IMAPClientAbortError, EOFError)


@contextlib.contextmanager
def translated_errors(what: str):
    """Re-raise network and protocol failures as mailshift errors naming `what` (no secrets)."""
    try:
        yield
    except (AuthError, ConfigError, TransientError, ProtocolError):
        raise
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"{what}: TLS certificate rejected: {exc.verify_message}") from exc
    except imapexc.LoginError as exc:
        raise AuthError(f"{what}: login refused: {_words(exc)}") from exc
    except _NETWORK_ERRORS as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except imaplib.IMAP4.error as exc:
        raise ProtocolError(f"{what}: {exc}") from exc


def _words(exc: Exception) -> str:
    text = str(exc)
    return text[:300]


def open_session(endpoint: Endpoint, login: str, user_password: str | None = None) -> IMAPClient:
    """Connect, secure and log in as `login`. The caller closes it with `close_session`."""
    what = f"IMAP {endpoint.label} as {login}"
    with translated_errors(what):
        ctx = endpoint.ssl_context() if endpoint.tls != "none" else None
        client = IMAPClient(
            endpoint.host,
            port=endpoint.port,
            ssl=endpoint.tls == "imaps",
            ssl_context=ctx,
            timeout=endpoint.timeout,
        )
        quiet_imaplib(client)
        try:
            if endpoint.tls == "starttls":
                client.starttls(ctx)
            _login(client, endpoint, login, user_password)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client


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
    from imapclient.response_parser import parse_fetch_response

    imap = client._imap
    tag = imap._command("UID", "FETCH", uid_range, seq_to_parenstr_upper(items))
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    return parse_fetch_response(data, client.normalise_times, True)
