"""ManageSieve (RFC 5804) at the destination, through sievelib: list, read, check, install and
activate one account's Sieve scripts. The login is the destination's (master user `login*admin`,
SASL PLAIN authzid, or the mailbox's own password), as for IMAP (`protocols.endpoint`).

Failures, kept apart like the other protocols: cannot connect -> TransientError; login refused
-> AuthError; the server refuses a script or a command -> ProtocolError with its words.
"""
from __future__ import annotations

import warnings

from sievelib.managesieve import Client, Error

from mailshift.errors import AuthError, ProtocolError, TransientError
from mailshift.protocols.endpoint import Endpoint, mailbox_password

DEFAULT_PORT = 4190


class SieveSession:
    """One ManageSieve session as `login` at `endpoint`'s host; use as a context manager."""

    def __init__(self, endpoint: Endpoint, login: str, port: int = DEFAULT_PORT):
        self.endpoint, self.login, self.port = endpoint, login, int(port)
        self.label = f"ManageSieve {endpoint.host}:{self.port} as {login}"
        self.client: Client | None = None

    def __enter__(self) -> SieveSession:
        ep = self.endpoint
        if ep.auth == "master":
            user, pw, authz = f"{self.login}{ep.master_separator}{ep.admin_user}", ep.password, ""
        elif ep.auth == "authzid":
            user, pw, authz = ep.admin_user or "", ep.password, self.login
        else:
            user, pw, authz = self.login, mailbox_password(ep, self.login), ""
        self.client = Client(ep.host, self.port)
        try:
            with warnings.catch_warnings():   # plaintext only where the connection says tls=none
                warnings.simplefilter("ignore")
                ok = self.client.connect(user, pw, authz_id=authz, starttls=ep.tls != "none",
                                         authmech="PLAIN")
        except (Error, OSError) as exc:
            raise TransientError(f"{self.label}: {exc}") from exc
        if not ok:
            raise AuthError(f"{self.label}: login refused: {self.client.errmsg!r}")
        return self

    def __exit__(self, *exc) -> bool:
        if self.client is not None:
            try:
                self.client.logout()
            except (Error, OSError):
                pass
        return False

    def _check(self, ok: bool, what: str) -> None:
        if not ok:
            raise ProtocolError(f"{self.label}: {what} refused: {self.client.errmsg!r}")

    def extensions(self) -> set[str]:
        """The SIEVE extensions the server offers (lower case)."""
        return {e.lower() for e in (self.client.get_sieve_capabilities() or [])}

    def scripts(self) -> tuple[str | None, list[str]]:
        """(active script or None, the other scripts)."""
        res = self.client.listscripts()
        if res is None:
            raise ProtocolError(f"{self.label}: LISTSCRIPTS refused: {self.client.errmsg!r}")
        return res

    def get(self, name: str) -> str:
        text = self.client.getscript(name)
        if text is None:
            raise ProtocolError(f"{self.label}: GETSCRIPT {name} refused: {self.client.errmsg!r}")
        return text

    def check(self, text: str) -> str | None:
        """None when the server accepts the script, else its reason."""
        return None if self.client.checkscript(text) else str(self.client.errmsg)

    def put(self, name: str, text: str) -> None:
        self._check(self.client.putscript(name, text), f"PUTSCRIPT {name}")

    def activate(self, name: str) -> None:
        self._check(self.client.setactive(name), f"SETACTIVE {name}")
