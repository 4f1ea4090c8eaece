"""How a failed exchange with a mail server becomes a mailshift error: one rule for IMAP and POP3,
so the same fault (refused, timed out, TLS, bad certificate) reads the same line and exit code
whichever protocol met it. The line names `what` (server and login, never a secret)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable

from mailshift.errors import AuthError, ConfigError, IdentityMismatch, ProtocolError, TransientError


@contextlib.contextmanager
def translated(what: str, *, tls_option: str, login_errors: tuple = (), network_errors: tuple = (),
               protocol_errors: tuple = (), words: Callable[[BaseException], str] = str):
    """Re-raise network, TLS, login and protocol failures as mailshift errors naming `what`.

    `tls_option` names the connection option an operator should check after a TLS failure;
    the tuples are the client library's own exception classes for each kind."""
    try:
        yield
    except (AuthError, ConfigError, TransientError, ProtocolError, IdentityMismatch):
        raise
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"{what}: TLS certificate rejected ({exc.verify_message}): fix the server's "
                          "certificate or the connection's `ca` option") from exc
    except ssl.SSLError as exc:
        raise ConfigError(f"{what}: TLS handshake failed ({exc.reason or exc}): check {tls_option} "
                          "against the port") from exc
    except login_errors as exc:
        raise AuthError(f"{what}: login refused: {words(exc)}") from exc
    except ConnectionRefusedError as exc:
        raise TransientError(f"{what}: connection refused") from exc
    except TimeoutError as exc:
        raise TransientError(f"{what}: no answer (timed out)") from exc
    except (OSError, EOFError, *network_errors) as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except protocol_errors as exc:
        raise ProtocolError(f"{what}: {exc}") from exc
