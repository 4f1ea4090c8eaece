"""Lab mail users: Dovecot passwd-file management (Dovecot re-reads the file when it changes)."""
from __future__ import annotations

import base64
import fcntl
import grp
import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from .config import LabConfig, ServerInfo

UserSpec = tuple  # (login, password | None, quota_bytes | None)

# Sources emulate legacy servers that kept plaintext passwords (so APOP/CRAM-MD5 work);
# the destination stores salted hashes.
PLAIN_ROLES = {"source"}


def ssha256(password: str) -> str:
    salt = secrets.token_bytes(8)
    digest = hashlib.sha256(password.encode() + salt).digest()
    return "{SSHA256}" + base64.b64encode(digest + salt).decode()


def check_password(stored: str, password: str) -> bool:
    if stored.startswith("{PLAIN}"):
        return secrets.compare_digest(stored[7:], password)
    if stored.startswith("{SSHA256}"):
        raw = base64.b64decode(stored[9:])
        digest, salt = raw[:32], raw[32:]
        return secrets.compare_digest(hashlib.sha256(password.encode() + salt).digest(), digest)
    return False


def _check_login(login: str) -> str:
    bad = set(":*/\\\n\r\t ") | {"\0"}
    if not login or login in (".", "..") or any(c in bad for c in login):
        raise ValueError(f"invalid lab login {login!r}")
    return login.lower()  # auth_username_format = %Lu


def _check_password(pw: str) -> str:
    if not pw or any(c in pw for c in ":\n\r\0"):
        raise ValueError("lab passwords must be non-empty and contain no ':' or newlines")
    return pw


def encode_password(server: ServerInfo, password: str) -> str:
    if server.role in PLAIN_ROLES:
        return "{PLAIN}" + password
    return ssha256(password)


def _server(cfg: LabConfig, server_name: str) -> ServerInfo:
    try:
        return cfg.servers[server_name]
    except KeyError:
        raise KeyError(f"unknown lab server {server_name!r}; have {sorted(cfg.servers)}") from None


def read_passwd(path: Path) -> dict[str, list[str]]:
    """login -> the 8 passwd-file fields."""
    out: dict[str, list[str]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":", 7)
        fields += [""] * (8 - len(fields))
        out[fields[0]] = fields
    return out


def write_passwd(path: Path, entries: dict[str, list[str]], header: str = "") -> None:
    """Atomic rewrite: temp file in the same dir, mode 640 root:dovecot, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = header + "".join(":".join(f) + "\n" for _, f in sorted(entries.items()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    if os.geteuid() == 0:
        os.chown(tmp, 0, grp.getgrnam("dovecot").gr_gid)
    os.chmod(tmp, 0o640)
    # Dovecot notices a changed passwd-file by (mtime in whole seconds, size): two rewrites of
    # equal size within one second would go unnoticed, so every rewrite gets a new second.
    try:
        old = int(os.stat(path).st_mtime)
    except FileNotFoundError:
        old = 0
    stamp = max(int(time.time()), old + 1)
    os.utime(tmp, (stamp, stamp))
    os.replace(tmp, path)
    global _last_write
    _last_write = time.time()


_last_write = 0.0


def wait_visible() -> None:
    """Dovecot stat()s a passwd-file at most once per second (per ioloop second): a lookup in
    the same second as the previous one still sees the old file. Sleeping to the next whole
    second after our last write makes the change visible to every later login."""
    delay = int(_last_write) + 1.05 - time.time()
    if delay > 0:
        time.sleep(delay)


@contextmanager
def _locked(path: Path):
    with open(path.with_name(path.name + ".lock"), "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


HEADER = ("# lab users: login:password:uid:gid:gecos:home:shell:extra (managed by lab.users;\n"
          "# uid/gid/home come from mail_uid/mail_gid/mail_home in dovecot.conf)\n")


def ensure_users(cfg: LabConfig, server_name: str, users: Iterable[UserSpec],
                 wait: bool = True) -> list[str]:
    """Create or update users (idempotent). Password None -> cfg.default_user_password;
    quota_bytes (dest only meaningful) -> userdb quota_rule. Returns the (lowercased) logins.
    With wait (default) returns only once Dovecot is sure to see the change (<= ~1 s; pass
    wait=False for all but the last of several calls, or call wait_visible() yourself)."""
    server = _server(cfg, server_name)
    path = Path(server.passwd_file)
    logins = []
    with _locked(path):
        entries = read_passwd(path)
        before = {k: list(v) for k, v in entries.items()}
        for spec in users:
            login, password, quota = (tuple(spec) + (None, None))[:3]
            login = _check_login(login)
            password = _check_password(password if password is not None else
                                       cfg.default_user_password)
            old = entries.get(login)
            if old and check_password(old[1], password) and \
                    old[1].startswith("{PLAIN}") == (server.role in PLAIN_ROLES):
                stored = old[1]
            else:
                stored = encode_password(server, password)
            extra = f"userdb_quota_rule=*:storage={int(quota)}B" if quota else ""
            entries[login] = [login, stored, "", "", "", "", "", extra]
            logins.append(login)
        if entries != before or not path.exists():
            write_passwd(path, entries, HEADER)
    if wait:
        wait_visible()
    return logins


def remove_users(cfg: LabConfig, server_name: str, logins: Iterable[str],
                 delete_mail: bool = True, wait: bool = True) -> None:
    server = _server(cfg, server_name)
    path = Path(server.passwd_file)
    logins = [_check_login(x) for x in logins]
    with _locked(path):
        entries = read_passwd(path)
        for login in logins:
            entries.pop(login, None)
        write_passwd(path, entries, HEADER)
    if delete_mail:
        for login in logins:
            reset_mailbox(cfg, server_name, login)
    if wait:
        wait_visible()


def list_users(cfg: LabConfig, server_name: str) -> list[str]:
    return sorted(read_passwd(Path(_server(cfg, server_name).passwd_file)))


def kick(cfg: LabConfig, server_name: str, login: str) -> None:
    """Disconnect the user's open sessions (best effort)."""
    server = _server(cfg, server_name)
    subprocess.run(["doveadm", "-c", server.config_file, "kick", _check_login(login)],
                   capture_output=True)


def mail_dir(cfg: LabConfig, server_name: str, login: str) -> Path:
    return Path(_server(cfg, server_name).mail_root) / _check_login(login)


def reset_mailbox(cfg: LabConfig, server_name: str, login: str) -> None:
    """Delete all of a user's mail (their home under mail_root); the user stays."""
    d = mail_dir(cfg, server_name, login)
    if d.exists():
        kick(cfg, server_name, login)
        shutil.rmtree(d)
