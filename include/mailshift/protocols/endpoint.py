"""Where an IMAP/POP3 server is and how to log in to it — parsed from a connection URI.

A server is described by an Airflow-style connection URI, so the same string works in an
Airflow connection, an `AIRFLOW_CONN_*` environment variable or the CLI:

    imap://admin:secret@mail.example.net:143?tls=starttls&auth=master&pop3_port=110

- scheme `imap` (port 143 by default) or `imaps` (implicit TLS, port 993).
- `tls`: `starttls` (default for imap), `imaps`, or `none` (plaintext). `none` to a host that is
  not loopback is refused (ConfigError naming the connection and the host) unless the
  connection also says `allow_plaintext=true`: the operator's explicit, visible decision.
- `verify`: `true` (default) checks the certificate and host name; `ca` names a CA bundle file.
- `auth`: `master` logs in as `<mailbox login><sep><admin>` (Dovecot master users, `sep`
  defaults to `*`); `authzid` uses SASL PLAIN with the mailbox login as authorization identity;
  `user` logs in as the mailbox itself (the password then comes from the caller).
- `pop3_port`, `pop3_tls` give the POP3 side of the same server (for UIDLs).
- `imap=false` says the server offers no IMAP at all (a POP3-only legacy system).
- `credentials` names the per-mailbox password file for `auth=user` (else
  `$MAILSHIFT_CREDENTIALS_DIR/<connection id>.credentials`): mode 0600, one `login:password` a
  line, `#` comments. Never stored in the mailshift database, never logged.

The password is a secret: `Endpoint.__repr__` never shows it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import stat
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from mailshift import settings
from mailshift.errors import ConfigError, CredentialsError

_TLS_MODES = ("starttls", "imaps", "none")
_AUTH_MODES = ("master", "authzid", "user")
_OPTIONS = {"tls", "verify", "ca", "auth", "sep", "pop3_port", "pop3_tls", "timeout", "credentials", "imap",
            "allow_plaintext"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: the only hosts plaintext may reach by default."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


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
    credentials: str | None = None   # per-mailbox password file (auth=user)
    conn_id: str | None = None       # the connection id it was resolved from, if known
    imap: bool = True                # False: the server offers only POP3
    allow_plaintext: bool = False    # tls=none to a non-loopback host, explicitly allowed

    def __post_init__(self):
        if self.tls not in _TLS_MODES:
            raise ConfigError(f"tls={self.tls!r}: expected one of {', '.join(_TLS_MODES)}")
        plain = [name for name, mode in (("tls", self.tls), ("pop3_tls", self.pop3_tls)) if mode == "none"]
        if plain and not self.allow_plaintext and not is_loopback(self.host):
            raise ConfigError(f"connection {self.conn_id or '(unnamed)'}: {plain[0]}=none to {self.host}, which is "
                              "not loopback: passwords and mail would cross the network in clear; use "
                              "tls=starttls or tls=imaps, or set allow_plaintext=true on this connection")
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


def parse_endpoint(uri: str, conn_id: str | None = None) -> Endpoint:
    """Parse a connection URI (see the module docstring); errors never echo the password and
    name the connection id when it is given."""
    parts = urlsplit(uri)
    if parts.scheme not in ("imap", "imaps"):
        raise ConfigError(f"unsupported scheme {parts.scheme!r} in connection URI for {parts.hostname}")
    if not parts.hostname:
        raise ConfigError("connection URI has no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - _OPTIONS)
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
        credentials=query.get("credentials"),
        imap=_flag(query.get("imap", "true"), "imap"),
        allow_plaintext=_flag(query.get("allow_plaintext", "false"), "allow_plaintext"),
        conn_id=conn_id,
    )


def endpoint_from_json(doc: dict, conn_id: str | None = None) -> Endpoint:
    """An endpoint from Airflow's JSON connection form (host, port, login, password, extra)."""
    extra = doc.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    query = urlencode({k: str(v) for k, v in extra.items() if k in _OPTIONS})
    user = quote(doc.get("login") or "", safe="")
    if doc.get("password"):
        user += ":" + quote(doc["password"], safe="")
    return parse_endpoint(f"imap://{user}@{doc.get('host')}:{doc.get('port') or 143}" + (f"?{query}" if query else ""),
                          conn_id)


def endpoint_from_env(conn_id: str) -> Endpoint:
    """Resolve a connection id the way Airflow does for env-defined connections.

    `mailshift_src_a` is looked up as `AIRFLOW_CONN_MAILSHIFT_SRC_A`, in Airflow's URI or JSON
    form. Inside Airflow tasks `mailshift.airflow.connections` reads the real
    Airflow connection instead.
    """
    _var, value = settings.connection_value(conn_id)
    return endpoint_from_json(value, conn_id) if isinstance(value, dict) else parse_endpoint(value, conn_id)


# -- per-mailbox credentials (servers without a master user) ---------------------------------
_cache_lock = threading.Lock()
_cache: dict[str, tuple[tuple, dict[str, str]]] = {}
#: optional lookup (endpoint, login) -> password | None tried before the file, e.g. Airflow's
#: secrets backend; set by the Airflow glue (`set_password_resolver`)
_resolver = None


def set_password_resolver(resolver) -> None:
    """Register a secrets-backend lookup `(endpoint, login) -> password or None` (None: unset)."""
    global _resolver
    _resolver = resolver


def credentials_path(endpoint: Endpoint) -> str | None:
    """The per-mailbox password file of an endpoint: its `credentials` option, else
    `$MAILSHIFT_CREDENTIALS_DIR/<connection id>.credentials`; None when neither is set."""
    if endpoint.credentials:
        return endpoint.credentials
    folder = settings.get(settings.CREDENTIALS_DIR)
    if folder and endpoint.conn_id:
        return os.path.join(folder, f"{endpoint.conn_id}.credentials")
    return None


def _read_credentials(path: str) -> dict[str, str]:
    """login -> password of a credentials file; refuses a file group or others may read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CredentialsError(f"credentials file {path}: {exc.strerror}; create it (mode 0600, "
                               "one `login:password` a line)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(f"credentials file {path} is mode {stat.S_IMODE(st.st_mode):04o}, readable by "
                               f"group or others: refused; run `chmod 600 {path}`")
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _cache_lock:
        hit = _cache.get(path)
        if hit and hit[0] == key:
            return hit[1]
    entries: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            login, sep, password = line.partition(":")
            if not sep or not login.strip() or not password:
                raise CredentialsError(f"credentials file {path}:{number}: expected `login:password`")
            entries[login.strip()] = password
    with _cache_lock:
        _cache[path] = (key, entries)
    return entries


def mailbox_password(endpoint: Endpoint, login: str) -> str:
    """The password of mailbox `login` on `endpoint` (auth=user): the registered secrets lookup,
    then the credentials file. CredentialsError names the file and the login, never a password."""
    if _resolver is not None:
        found = _resolver(endpoint, login)
        if found:
            return found
    path = credentials_path(endpoint)
    if path is None:
        raise CredentialsError(f"{endpoint.label}: auth=user needs the password of {login}: set the "
                               f"connection's `credentials` extra or {settings.CREDENTIALS_DIR}")
    entries = _read_credentials(path)
    if login not in entries:
        raise CredentialsError(f"{endpoint.label}: no password for {login} in {path}")
    return entries[login]
