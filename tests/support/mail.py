"""Test helpers that talk to the real lab servers: fresh databases, mailboxes, snapshots.

Snapshots read a mailbox directly over IMAP (never through the copier or the ledger), so
tests compare what the servers hold, not what mailshift believes.
"""

from __future__ import annotations

import contextlib
import hashlib
import poplib
import uuid
from collections import Counter
from dataclasses import dataclass

import psycopg2
from imapclient import IMAPClient

from lab import users
from lab.config import LabConfig
from mailshift.protocols.imap.session import fetch_range
from mailshift.store import migrate

DOMAIN = "lab.mailshift.test"


def _template(cfg: LabConfig, admin) -> str:
    """A migrated template database, one per version of the migration files (cheap copies)."""
    digest = hashlib.sha256(b"".join(m.path.read_bytes() for m in migrate.discover())).hexdigest()[:12]
    name = f"mailshift_tpl_{digest}"
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE DATABASE {name} OWNER mailshift")
            migrate.upgrade(cfg.pg_dsn.rsplit("/", 1)[0] + "/" + name)
    return name


@contextlib.contextmanager
def fresh_database(cfg: LabConfig):
    """A new, migrated mailshift database in the lab cluster; dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(cfg.pg_admin_dsn)
    admin.autocommit = True
    template = _template(cfg, admin)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} OWNER mailshift TEMPLATE {template}")
    dsn = cfg.pg_dsn.rsplit("/", 1)[0] + "/" + name
    try:
        assert migrate.upgrade(dsn) == []
        yield dsn
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@dataclass(frozen=True)
class LabMailbox:
    id: int
    address: str
    source: str
    source_login: str
    dest_login: str
    protocol: str


def add_mailbox(conn, cfg: LabConfig, source: str, login: str, protocol: str = "imap",
                spec: dict | None = None, quota_bytes: int | None = None) -> LabMailbox:
    """Inventory rows for one mailbox, empty accounts on the source and the destination."""
    address = f"{login}@{DOMAIN}"
    mid = inventory_rows(conn, source=source, kind="dovecot", host="127.0.0.1", imap_port=cfg.servers[source].imap_port,
                         pop3_port=cfg.servers[source].pop3_port, conn_id="mailshift_" + source.replace("-", "_"),
                         login=login, dest_login=address, protocol=protocol, spec=spec)
    users.ensure_users(cfg, source, [(login, None, None)])
    users.reset_mailbox(cfg, source, login)
    users.ensure_users(cfg, "dest", [(address, None, quota_bytes)])
    users.reset_mailbox(cfg, "dest", address)
    return LabMailbox(mid, address, source, login, address, protocol)


def inventory_rows(conn, *, source: str, kind: str, host: str, imap_port, pop3_port, conn_id: str, login: str,
                   dest_login: str, protocol: str = "imap", spec: dict | None = None, domain: str = DOMAIN) -> int:
    """One mailbox in a building of its own (`B-<source>-<login>`, household `H-<building>`) on
    `domain`, its source system added if new; returns the mailbox id."""
    import json

    address, building = f"{login}@{domain}", f"B-{source}-{login}"
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port, tls, max_connections,"
                    " airflow_conn_id) VALUES (%s, %s, %s, %s, %s, 'none', 8, %s) ON CONFLICT (id) DO NOTHING",
                    (source, kind, host, imap_port, pop3_port, conn_id))
        cur.execute("INSERT INTO domain (name) VALUES (%s) ON CONFLICT DO NOTHING", (domain,))
        cur.execute("INSERT INTO building (id, name, domain, source_system, spec) VALUES (%s, %s, %s, %s, %s)",
                    (building, building, domain, source, json.dumps(spec or {})))
        cur.execute("INSERT INTO household (id, building_id) VALUES (%s, %s)", ("H-" + building, building))
        cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login, protocol)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    ("H-" + building, address, login, dest_login, protocol))
        return cur.fetchone()[0]


def unique_login(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def imap(cfg: LabConfig, server: str, login: str):
    s = cfg.servers[server]
    client = IMAPClient(s.host, port=s.imap_port, ssl=False, timeout=60)
    client.normalise_times = False
    client.login(s.master_login(login), s.admin_password)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def logical(name: str, prefix: str, sep: str) -> str:
    """Folder name reduced to a "/"-separated logical path, INBOX kept."""
    if name.upper() == "INBOX":
        return "INBOX"
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    return "/".join(name.split(sep))


def snapshot(cfg: LabConfig, server: str, login: str, strip_x_uidl: bool = False) -> dict:
    """{logical folder: Counter of (sha256, flags, internaldate)} read straight from the server."""
    s = cfg.servers[server]
    out = {}
    with imap(cfg, server, login) as c:
        for flags, _, name in c.list_folders():
            if any(f.lower() == b"\\noselect" for f in flags):
                continue
            info = c.select_folder(name, readonly=True)
            items = Counter()
            if info.get(b"EXISTS"):
                for _, d in fetch_range(c, "1:*", ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).items():
                    body = d[b"BODY[]"]
                    if strip_x_uidl and body.startswith(b"X-UIDL: "):
                        body = body[body.index(b"\r\n") + 2:]
                    fl = tuple(sorted(f.decode() for f in d[b"FLAGS"] if f.lower() != b"\\recent"))
                    items[(hashlib.sha256(body).hexdigest(), fl, d[b"INTERNALDATE"].isoformat())] += 1
            out[logical(name, s.prefix, s.separator)] = items
    return out


def ordered_digests(cfg: LabConfig, server: str, login: str, folder: str, strip_x_uidl: bool = False) -> list[str]:
    """SHA-256 of a folder's messages in UID order (the order a client sees by arrival)."""
    with imap(cfg, server, login) as c:
        info = c.select_folder(folder, readonly=True)
        data = fetch_range(c, "1:*", ["BODY.PEEK[]"]) if info.get(b"EXISTS") else {}
    out = []
    for uid in sorted(data):
        body = data[uid][b"BODY[]"]
        if strip_x_uidl and body.startswith(b"X-UIDL: "):
            body = body[body.index(b"\r\n") + 2:]
        out.append(hashlib.sha256(body).hexdigest())
    return out


def pop3_uidls(cfg: LabConfig, server: str, login: str) -> list[str]:
    s = cfg.servers[server]
    p = poplib.POP3(s.host, s.pop3_port, timeout=30)
    try:
        p.user(s.master_login(login))
        p.pass_(s.admin_password)
        return [line.split()[1].decode() for line in p.uidl()[1]]
    finally:
        p.close()  # no QUIT: nothing committed


def ledger_states(conn, mailbox_id: int) -> Counter:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM message WHERE mailbox_id = %s GROUP BY state", (mailbox_id,))
        return Counter(dict(cur.fetchall()))
