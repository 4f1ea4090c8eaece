"""Where an IMAP/POP3 server is and how to log in to it — parsed from a connection URI.

A server is described by an Airflow-style connection URI, so the same string works in an
Airflow connection, an `AIRFLOW_CONN_*` environment variable or the CLI:

    imap://admin:secret@mail.example.net:143?tls=starttls&auth=master&pop3_port=110

- scheme `imap` (port 143 by default) or `imaps` (implicit TLS, port 993).
- `tls`: `starttls` (default for imap), `imaps`, or `none` (plaintext; only for a loopback lab).
- `verify`: `true` (default) checks the certificate and host name; `ca` names a CA bundle file.
- `auth`: `master` logs in as `<mailbox login><sep><admin>` (Dovecot master users, `sep`
  defaults to `*`); `authzid` uses SASL PLAIN with the mailbox login as authorization identity;
  `user` logs in as the mailbox itself (the password then comes from the caller).
- `pop3_port`, `pop3_tls` give the POP3 side of the same server (for UIDLs).

The password is a secret: `Endpoint.__repr__` never shows it.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from mailshift import settings
from mailshift.errors import ConfigError

_TLS_MODES = ("starttls", "imaps", "none")
_AUTH_MODES = ("master", "authzid", "user")


@dataclass(frozen=True)
class Endpoint:
    """One IMAP server plus the credentials mailshift uses on it."""

    host: str
    port: int
    tls: str = "starttls"
    verify: bool = True
    ca_file: str | None = None
    auth: str = "master"
    admin_user: str | None = None
    password: str = field(default="", repr=False)
    master_separator: str = "*"
    pop3_port: int | None = None
    pop3_tls: str | None = None
    timeout: float = 60.0

    def __post_init__(self):
        if self.tls not in _TLS_MODES:
            raise ConfigError(f"tls={self.tls!r}: expected one of {', '.join(_TLS_MODES)}")
        if self.auth not in _AUTH_MODES:
            raise ConfigError(f"auth={self.auth!r}: expected one of {', '.join(_AUTH_MODES)}")
        if self.auth in ("master", "authzid") and not self.admin_user:
            raise ConfigError(f"auth={self.auth} needs an admin user in the URI (admin@host)")

    @property
    def label(self) -> str:
        """A printable name with no secret in it (for logs and Slack)."""
        return f"{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _flag(value: str, name: str) -> bool:
    low = value.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r}: expected true or false")


def parse_endpoint(uri: str) -> Endpoint:
    """Parse a connection URI (see the module docstring); errors never echo the password."""
    parts = urlsplit(uri)
    if parts.scheme not in ("imap", "imaps"):
        raise ConfigError(f"unsupported scheme {parts.scheme!r} in connection URI for {parts.hostname}")
    if not parts.hostname:
        raise ConfigError("connection URI has no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    known = {"tls", "verify", "ca", "auth", "sep", "pop3_port", "pop3_tls", "timeout"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in connection URI for {parts.hostname}")
    tls = query.get("tls", "imaps" if parts.scheme == "imaps" else "starttls")
    default_port = 993 if tls == "imaps" else 143
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ConfigError(f"bad port in connection URI for {parts.hostname}") from exc
    return Endpoint(
        host=parts.hostname,
        port=port,
        tls=tls,
        verify=_flag(query.get("verify", "true"), "verify"),
        ca_file=query.get("ca"),
        auth=query.get("auth", "master"),
        admin_user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else "",
        master_separator=query.get("sep", "*"),
        pop3_port=int(query["pop3_port"]) if "pop3_port" in query else None,
        pop3_tls=query.get("pop3_tls"),
        timeout=float(query.get("timeout", "60")),
    )


def endpoint_from_json(doc: dict) -> Endpoint:
    """An endpoint from Airflow's JSON connection form (host, port, login, password, extra)."""
    extra = doc.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    known = {"tls", "verify", "ca", "auth", "sep", "pop3_port", "pop3_tls", "timeout"}
    query = urlencode({k: str(v) for k, v in extra.items() if k in known})
    user = quote(doc.get("login") or "", safe="")
    if doc.get("password"):
        user += ":" + quote(doc["password"], safe="")
    return parse_endpoint(f"imap://{user}@{doc.get('host')}:{doc.get('port') or 143}" + (f"?{query}" if query else ""))


def endpoint_from_env(conn_id: str) -> Endpoint:
    """Resolve a connection id the way Airflow does for env-defined connections.

    `mailshift_src_a` is looked up as `AIRFLOW_CONN_MAILSHIFT_SRC_A`, in Airflow's URI or JSON
    form. Inside Airflow tasks `mailshift.airflow.connections` reads the real
    Airflow connection instead.
    """
    _var, value = settings.connection_value(conn_id)
    return endpoint_from_json(value) if isinstance(value, dict) else parse_endpoint(value)
