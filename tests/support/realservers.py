"""Test helpers for the lab's Cyrus IMAP servers (`lab.cyrus`): users with their own passwords,
per-mailbox credentials files, connection URIs, inventory rows, direct IMAP/POP3 snapshots.

Cyrus logins here are legacy-style customer numbers (no `@`), and the destination login differs
from the address (the inventory's `dest_login`), as at a real provider."""

from __future__ import annotations

import contextlib
import hashlib
import os
import poplib
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient

from lab.config import LabConfig
from lab.cyrus import Cyrus
from mailshift.protocols.endpoint import Endpoint, parse_endpoint
from mailshift.protocols.imap.session import fetch_range
from support.mail import inventory_rows

DOMAIN = "real.mailshift.test"


def conn_id(name: str) -> str:
    return "mailshift_" + name.replace("-", "_")


def cyrus(cfg: LabConfig, name: str) -> Cyrus:
    return Cyrus(cfg.cyrus[name], cfg.root / "run")


def new_user(cfg: LabConfig, name: str, login: str | None = None, password: str | None = None) -> tuple[str, str]:
    """A SASL user on a Cyrus instance (INBOX appears at its first login / delivery)."""
    login = login or "c" + uuid.uuid4().hex[:10]
    password = password or secrets.token_urlsafe(12)
    cyrus(cfg, name).set_password(login, password)
    return login, password


def write_credentials(path: Path, entries: dict[str, str], mode: int = 0o600) -> Path:
    path.write_text("# per-mailbox passwords (test)\n" + "".join(f"{k}:{v}\n" for k, v in entries.items()))
    os.chmod(path, mode)
    return path


def uri(cfg: LabConfig, name: str, auth: str = "user", credentials: Path | None = None, **extra) -> str:
    c = cfg.cyrus[name]
    admin = f"{c['admin_user']}:{c['admin_password']}@" if auth != "user" else ""
    port = c["imap_port"] or c["pop3_port"]
    opts = {"tls": "none", "auth": auth, "pop3_port": c["pop3_port"]}
    if credentials:
        opts["credentials"] = str(credentials)
    if not c["imap_port"]:
        opts["imap"] = "false"
    opts.update(extra)
    return f"imap://{admin}{c['host']}:{port}?" + "&".join(f"{k}={v}" for k, v in opts.items())


def endpoint(cfg: LabConfig, name: str, auth: str = "user", credentials: Path | None = None, **extra) -> Endpoint:
    return parse_endpoint(uri(cfg, name, auth, credentials, **extra))


@dataclass(frozen=True)
class RealMailbox:
    id: int
    address: str
    source: str
    source_login: str
    source_password: str
    dest_login: str
    dest_password: str
    protocol: str
    building: str


def add_mailbox(conn, cfg: LabConfig, source: str, dest: str = "cyrus-dest", protocol: str = "imap",
                spec: dict | None = None) -> RealMailbox:
    """Inventory rows (source system = the Cyrus instance) and users on both servers, each with
    its own password; the destination login is not the address."""
    if source in cfg.servers:  # a lab Dovecot source (master user) into a Cyrus destination
        from lab import users

        src_login, src_pw = "d" + uuid.uuid4().hex[:10], secrets.token_urlsafe(12)
        users.ensure_users(cfg, source, [(src_login, src_pw, None)])
        s = cfg.servers[source]
        c = {"host": s.host, "imap_port": s.imap_port, "pop3_port": s.pop3_port}
    else:
        src_login, src_pw = new_user(cfg, source)
        c = cfg.cyrus[source]
    if dest in cfg.servers:  # the lab's Dovecot destination (master user; login = address)
        from lab import users

        dest_login, dest_pw = f"{src_login}@{DOMAIN}", None
        users.ensure_users(cfg, dest, [(dest_login, None, None)])
    else:
        dest_login, dest_pw = new_user(cfg, dest, "n" + src_login[1:])
    address = f"{src_login}@{DOMAIN}"
    building = f"B-{source}-{src_login}"
    mid = inventory_rows(conn, source=source, kind="cyrus", host=c["host"], imap_port=c["imap_port"],
                         pop3_port=c["pop3_port"], conn_id=conn_id(source), login=src_login, dest_login=dest_login,
                         protocol=protocol, spec=spec, domain=DOMAIN)
    return RealMailbox(mid, address, source, src_login, src_pw, dest_login, dest_pw, protocol, building)


@contextlib.contextmanager
def imap(cfg: LabConfig, name: str, login: str, password: str):
    """A session as the mailbox itself (Cyrus) or through the master user (lab Dovecot)."""
    if name in cfg.servers:
        s = cfg.servers[name]
        client = IMAPClient(s.host, port=s.imap_port, ssl=False, timeout=60)
        client.login(s.master_login(login), s.admin_password)
    else:
        c = cfg.cyrus[name]
        client = IMAPClient(c["host"], port=c["imap_port"], ssl=False, timeout=60)
        client.login(login, password)
    client.normalise_times = False
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def snapshot(cfg: LabConfig, name: str, login: str, password: str) -> dict:
    """{folder: Counter of (sha256, flags)} read straight from the server."""
    out = {}
    with imap(cfg, name, login, password) as c:
        for flags, _, folder in c.list_folders():
            if any(f.lower() == b"\\noselect" for f in flags):
                continue
            info = c.select_folder(folder, readonly=True)
            items = Counter()
            if info.get(b"EXISTS"):
                for d in fetch_range(c, "1:*", ["BODY.PEEK[]", "FLAGS"]).values():
                    fl = tuple(sorted(f.decode() for f in d[b"FLAGS"] if f.lower() != b"\\recent"))
                    items[(hashlib.sha256(d[b"BODY[]"]).hexdigest(), fl)] += 1
            out[folder] = items
    return out


def pop3_uidls(cfg: LabConfig, name: str, login: str, password: str) -> list[str]:
    c = cfg.cyrus[name]
    p = poplib.POP3(c["host"], c["pop3_port"], timeout=30)
    try:
        p.user(login)
        p.pass_(password)
        return [line.split()[1].decode() for line in p.uidl()[1]]
    finally:
        p.close()  # no QUIT: nothing committed
