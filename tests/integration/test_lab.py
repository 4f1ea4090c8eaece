"""The local lab against its real servers: Dovecot x3, PostgreSQL, BIND9, the Slack stand-in."""
from __future__ import annotations

import json
import os
import poplib
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update
import psycopg2
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from lab import proc
from lab.users import ensure_users, list_users, remove_users, reset_mailbox, wait_visible

SERVERS = ["src-a", "src-b", "dest"]
INCLUDE = Path(__file__).resolve().parents[2] / "include"


@pytest.fixture
def user(lab_config):
    """A fresh user on every lab server (default password, 200 MB quota); removed after."""
    login = f"t-{uuid.uuid4().hex[:10]}@lab.test"
    for name in SERVERS:
        ensure_users(lab_config, name, [(login, None, 200 * 1024 * 1024)], wait=False)
        reset_mailbox(lab_config, name, login)
    wait_visible()
    yield login
    for name in SERVERS:
        remove_users(lab_config, name, [login], wait=False)


def imap(cfg, name, tls="starttls"):
    s = cfg.servers[name]
    if tls == "imaps":
        return IMAPClient(s.host, s.imaps_port, ssl=True, ssl_context=cfg.ssl_context(),
                          timeout=20)
    c = IMAPClient(s.host, s.imap_port, ssl=False, timeout=20)
    if tls == "starttls":
        c.starttls(cfg.ssl_context())
    return c


def msg(subject: str, extra: str = "", body: str = "hello\r\n") -> bytes:
    return (f"From: a@lab.test\r\nTo: b@lab.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@lab.test>\r\n{extra}\r\n{body}").encode()


# --- Dovecot ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SERVERS)
def test_namespace_matches_config(lab_config, user, name):
    s = lab_config.servers[name]
    with imap(lab_config, name) as c:
        c.login(user, lab_config.default_user_password)
        assert b"NAMESPACE" in c.capabilities()
        ns = c.namespace()
        assert [(p, sep) for p, sep in ns.personal] == [(s.prefix, s.separator)]
    expected = {"src-a": ("", "/"), "src-b": ("INBOX.", "."), "dest": ("", "/")}[name]
    assert (s.prefix, s.separator) == expected


@pytest.mark.parametrize("name", SERVERS)
def test_master_user_login_both_forms(lab_config, user, name):
    s = lab_config.servers[name]
    subject = f"via-master-{uuid.uuid4().hex[:6]}"
    with imap(lab_config, name) as c:               # "<user>*admin"
        c.login(s.master_login(user), s.admin_password)
        c.append("INBOX", msg(subject))
    with imap(lab_config, name) as c:               # SASL PLAIN with authzid
        c.plain_login(s.admin_user, s.admin_password, authorization_identity=user)
        c.select_folder("INBOX", readonly=True)
        assert len(c.search(["SUBJECT", subject])) == 1
    with imap(lab_config, name) as c:               # and the user really owns it
        c.login(user, lab_config.default_user_password)
        c.select_folder("INBOX", readonly=True)
        assert len(c.search(["SUBJECT", subject])) == 1
    with imap(lab_config, name) as c, pytest.raises(LoginError):
        c.login(s.master_login(user), "wrong-" + s.admin_password)
    p = poplib.POP3(s.host, s.pop3_port, timeout=20)  # POP3 master login too
    p.user(s.master_login(user))
    p.pass_(s.admin_password)
    assert p.stat()[0] == 1
    p.quit()


@pytest.mark.parametrize("name", SERVERS)
def test_tls_verifies_against_lab_ca(lab_config, user, name):
    s = lab_config.servers[name]
    for tls in ("starttls", "imaps"):
        with imap(lab_config, name, tls) as c:
            sock = c._imap.sock
            assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
            c.login(user, lab_config.default_user_password)
    # a client that does not trust the lab CA must fail verification
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(s.host, s.imaps_port, ssl=True, ssl_context=ssl.create_default_context(),
                   timeout=10)
    p = poplib.POP3(s.host, s.pop3_port, timeout=20)  # POP3 STLS
    p.stls(lab_config.ssl_context())
    p.user(user)
    p.pass_(lab_config.default_user_password)
    p.quit()


def test_dest_capabilities_and_special_use(lab_config, user):
    d = lab_config.dest
    with imap(lab_config, "dest") as c:
        c.login(user, lab_config.default_user_password)
        caps = set(c.capabilities())
        assert {b"UIDPLUS", b"SPECIAL-USE", b"QUOTA", b"MOVE"} <= caps
        assert f"APPENDLIMIT={d.max_mail_size}".encode() in caps
        uses = {name: set(flags) for flags, _, name in c.list_folders()}
        for folder, use in (("Sent", b"\\Sent"), ("Drafts", b"\\Drafts"), ("Trash", b"\\Trash"),
                            ("Junk", b"\\Junk")):
            assert use in uses[folder]
        subscribed = {name for _, _, name in c.list_sub_folders()}
        assert subscribed >= {"Sent", "Drafts", "Trash", "Junk"}   # auto = subscribe
        roots, quotas = c.get_quota_root("INBOX")
        assert quotas and quotas[0].limit == 200 * 1024  # KiB, from the userdb quota_rule
        # UIDPLUS: APPEND returns APPENDUID
        resp = c.append("INBOX", msg("uidplus"))
        assert b"APPENDUID" in resp


def test_dest_refuses_append_over_limit(lab_config, user):
    limit = lab_config.dest.max_mail_size
    head = b"From: a@lab.test\r\nSubject: big\r\n\r\n"

    def sized(n):
        body = (b"x" * 998 + b"\r\n") * (n // 1000 + 1)
        return (head + body)[:n - 2] + b"\r\n"

    with imap(lab_config, "dest", tls="none") as c:
        c.login(user, lab_config.default_user_password)
        c.append("INBOX", sized(limit))                # exactly at the limit: accepted
        with pytest.raises(IMAPClientError, match=r"\[LIMIT\]"):
            c.append("INBOX", sized(limit + 1))
        c.select_folder("INBOX", readonly=True)
        assert len(c.search(["ALL"])) == 1


@pytest.mark.parametrize("name", ["src-a", "src-b"])
def test_source_pop3_uidl_is_not_uid_derived(lab_config, user, name):
    s = lab_config.servers[name]
    with imap(lab_config, name, tls="none") as c:
        c.login(user, lab_config.default_user_password)
        c.select_folder("INBOX")                       # creates INBOX, fixes UIDVALIDITY
        time.sleep(1.1)                                # maildir names start with a timestamp
        for i in range(3):
            c.append("INBOX", msg(f"uidl {i}"))
        info = c.select_folder("INBOX", readonly=True)
        uidvalidity = info[b"UIDVALIDITY"]
        uids = c.search(["ALL"])
    assert len(uids) == 3

    def uidls():
        p = poplib.POP3(s.host, s.pop3_port, timeout=20)
        p.user(user)
        p.pass_(lab_config.default_user_password)
        out = [line.split(b" ", 1)[1].decode() for line in p.uidl()[1]]
        p.retr(1)
        p.quit()
        return out

    first = uidls()
    assert len(first) == 3 and len(set(first)) == 3
    assert uidls() == first                            # stable across sessions
    for uidl, uid in zip(first, uids, strict=True):
        assert str(uidvalidity) not in uidl
        for form in (f"{uid:08X}{uidvalidity:08X}", f"{uid:08x}{uidvalidity:08x}",
                     f"{uidvalidity}.{uid}", f"{uid}.{uidvalidity}"):
            assert form not in uidl
        assert not re.fullmatch(rf"0*{uid}", uidl)
    # the audit parses POP3 logins and logouts with top/retr/dele counts
    log = Path(s.log_dir, "dovecot.log").read_text()
    assert re.search(rf"pop3-login: Info: Login: user=<{re.escape(user)}>", log)
    assert re.search(rf"pop3\({re.escape(user)}\).*Disconnected: Logged out "
                     r"top=0/0, retr=1/\d+, del=0/3", log)


@pytest.mark.parametrize("name", ["src-a", "src-b"])
def test_source_pop3_legacy_commands(lab_config, user, name):
    """Legacy features the audit looks for: APOP logins and the LAST command."""
    s = lab_config.servers[name]
    p = poplib.POP3(s.host, s.pop3_port, timeout=20)
    assert re.search(rb"<[^>]+@[^>]+>", p.getwelcome())  # APOP timestamp in the greeting
    assert p.apop(user, lab_config.default_user_password).startswith(b"+OK")
    assert p._shortcmd("LAST") == b"+OK 0"
    p.quit()
    log = Path(s.log_dir, "dovecot.log").read_text()
    assert re.search(rf"pop3-login: Info: Login: user=<{re.escape(user)}>, method=APOP", log)


def test_dest_pop3_uidl_reuses_x_uidl(lab_config, user):
    d = lab_config.dest
    with imap(lab_config, "dest", tls="none") as c:
        c.login(user, lab_config.default_user_password)
        c.append("INBOX", msg("legacy", extra="X-UIDL: 1700000000.M1P2.oldhost,S=1\r\n"))
        c.append("INBOX", msg("native"))
        info = c.select_folder("INBOX", readonly=True)
        uidvalidity, uids = info[b"UIDVALIDITY"], c.search(["ALL"])
    p = poplib.POP3(d.host, d.pop3_port, timeout=20)
    p.user(user)
    p.pass_(lab_config.default_user_password)
    got = [line.split(b" ", 1)[1].decode() for line in p.uidl()[1]]
    p.quit()
    # Dovecot's %08Xu%08Xv renders lower-case hex
    assert got == ["1700000000.M1P2.oldhost,S=1", f"{uids[1]:08x}{uidvalidity:08x}"]


def test_users_idempotent_and_quota(lab_config):
    login = f"q-{uuid.uuid4().hex[:8]}@lab.test"
    try:
        ensure_users(lab_config, "dest", [(login, "pw-one", 3 * 1024 * 1024)])
        mtime = os.stat(lab_config.dest.passwd_file).st_mtime_ns
        ensure_users(lab_config, "dest", [(login, "pw-one", 3 * 1024 * 1024)])
        assert os.stat(lab_config.dest.passwd_file).st_mtime_ns == mtime  # nothing changed
        ensure_users(lab_config, "dest", [(login, "pw-two", 5 * 1024 * 1024)])
        with imap(lab_config, "dest", tls="none") as c:
            c.login(login, "pw-two")                   # re-read without a reload
            assert c.get_quota_root("INBOX")[1][0].limit == 5 * 1024
        assert login in list_users(lab_config, "dest")
        mode = os.stat(lab_config.dest.passwd_file).st_mode
        assert not mode & stat.S_IROTH
    finally:
        remove_users(lab_config, "dest", [login])
    assert login not in list_users(lab_config, "dest")


# --- PostgreSQL ---------------------------------------------------------------------------------
def test_postgres_private_cluster(lab_config):
    with psycopg2.connect(lab_config.pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database(), current_setting('port'),"
                    " current_setting('fsync')")
        user, db, port, fsync = cur.fetchone()
        cur.execute("CREATE TEMP TABLE t (x int)")    # may create objects
    conn.close()
    assert (user, db, int(port), fsync) == ("mailshift", "mailshift",
                                            lab_config.port_base + 40, "off")
    with psycopg2.connect(lab_config.pg_admin_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone()[0] is True
        cur.execute("SELECT current_setting('data_directory')")
        data = cur.fetchone()[0]
    conn.close()
    assert data != "/var/lib/postgresql/15/main"
    assert Path(lab_config.raw["pg"]["dir"]) in Path(data).parents
    bad = lab_config.pg_dsn.replace("mailshift:", "mailshift:x", 1)   # TCP needs the password
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(bad)


def test_lab_json_is_private(lab_config):
    for f in ("lab.json", "env"):
        assert stat.S_IMODE(os.stat(lab_config.root / f).st_mode) == 0o600
    env = (lab_config.root / "env").read_text()
    assert f"export MAILSHIFT_DB_URL={lab_config.pg_dsn}" in env or "MAILSHIFT_DB_URL=" in env
    assert "MAILSHIFT_LAB_DIR=" in env and "MAILSHIFT_LAB_PORT_BASE=" in env


# --- BIND9 --------------------------------------------------------------------------------------
def _query(cfg, name, rdtype):
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, cfg.dns_host, port=cfg.dns_port, timeout=5)


def test_dns_soa_and_mx(lab_config):
    zone = lab_config.dns_zone
    r = _query(lab_config, zone, "SOA")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert r.answer[0][0].mname.to_text() == f"ns1.{zone}."
    r = _query(lab_config, zone, "MX")
    (mx,) = r.answer
    assert mx.ttl == 3600
    assert [(x.preference, x.exchange.to_text()) for x in mx] == [(10, f"mx-old.{zone}.")]
    r = _query(lab_config, "example.com", "A")        # no recursion
    assert r.rcode() == dns.rcode.REFUSED


def test_dns_update_needs_tsig(lab_config):
    zone = lab_config.dns_zone
    name = f"t-{uuid.uuid4().hex[:8]}"
    unsigned = dns.update.UpdateMessage(zone)
    unsigned.add(name, 300, "MX", f"10 mx-new.{zone}.")
    r = dns.query.tcp(unsigned, lab_config.dns_host, port=lab_config.dns_port, timeout=5)
    assert r.rcode() == dns.rcode.REFUSED

    signed = dns.update.UpdateMessage(zone, keyring=lab_config.tsig_keyring(),
                                      keyname=lab_config.tsig_key_name,
                                      keyalgorithm=lab_config.tsig_algorithm)
    signed.replace(name, 300, "MX", f"10 mx-new.{zone}.")
    r = dns.query.tcp(signed, lab_config.dns_host, port=lab_config.dns_port, timeout=5)
    assert r.rcode() == dns.rcode.NOERROR
    r = _query(lab_config, f"{name}.{zone}", "MX")
    assert [x.exchange.to_text() for x in r.answer[0]] == [f"mx-new.{zone}."]
    cleanup = dns.update.UpdateMessage(zone, keyring=lab_config.tsig_keyring(),
                                       keyname=lab_config.tsig_key_name,
                                       keyalgorithm=lab_config.tsig_algorithm)
    cleanup.delete(name)
    assert dns.query.tcp(cleanup, lab_config.dns_host, port=lab_config.dns_port,
                         timeout=5).rcode() == dns.rcode.NOERROR


# --- Slack stand-in -----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_slack_standin_with_real_sdk(lab_config):
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    from lab import slack_standin

    client = WebClient(token=lab_config.slack_token, base_url=lab_config.slack_base_url)
    assert client.auth_test()["ok"] is True
    tag = uuid.uuid4().hex
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*wave 1* {tag}"}}]
    r = client.chat_postMessage(channel="#mailshift-ops", text=f"hello {tag}", blocks=blocks)
    assert r["ok"] and r["channel"] == "#mailshift-ops" and r["message"]["text"] == f"hello {tag}"
    assert float(r["ts"]) > 0
    calls = [c for c in slack_standin.recorded(lab_config, "chat.postMessage")
             if tag in c["params"].get("text", "")]
    assert len(calls) == 1
    assert calls[0]["params"]["blocks"] == blocks
    assert "token" not in json.dumps(calls[0])
    assert lab_config.slack_token not in (lab_config.root / "slack/messages.jsonl").read_text()

    bad = WebClient(token="xoxb-wrong", base_url=lab_config.slack_base_url)
    with pytest.raises(SlackApiError) as e:
        bad.chat_postMessage(channel="#x", text="no")
    assert e.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as e:
        client.chat_postMessage(channel="#x")
    assert e.value.response["error"] == "no_text"


# --- lifecycle (a separate lab: own dir, port base 15300) ---------------------------------------
def _lab(cmd, env):
    return subprocess.run([sys.executable, "-m", "lab", cmd], env=env, capture_output=True,
                          text=True, timeout=180)


def test_lab_up_status_down_roundtrip(tmp_path_factory):
    base = int(os.environ.get("MAILSHIFT_LAB_TEST_PORT_BASE", "15300"))
    ports = [base + o for o in (1, 2, 3, 11, 12, 13, 21, 22, 23, 40, 53, 61, 62, 64, 65, 66, 80)]
    if any(proc.port_listening("127.0.0.1", p) for p in ports):
        pytest.skip(f"ports around {base} are busy")
    root = Path(f"/tmp/mailshift-lab-test-{uuid.uuid4().hex[:8]}")  # /tmp itself is traversable
    env = dict(os.environ, MAILSHIFT_LAB_DIR=str(root), MAILSHIFT_LAB_PORT_BASE=str(base),
               PYTHONPATH=str(INCLUDE), MAILSHIFT_LAB_MAX_CONN_SRC_B="3")
    try:
        r = _lab("up", env)
        assert r.returncode == 0, r.stdout + r.stderr
        r = _lab("status", env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count(" up ") == 10  # 6 + 3 Cyrus + postfix (lab MTA)
        state = json.loads((root / "lab.json").read_text())
        assert state["port_base"] == base and stat.S_IMODE((root / "lab.json").stat().st_mode) == 0o600

        # the emulated legacy connection limit: a 4th concurrent IMAP session on src-b stalls
        from lab.config import LabConfig

        cfg = LabConfig.load(root)
        s = cfg.servers["src-b"]
        assert s.max_connections == 3
        ensure_users(cfg, "src-b", [("limit@lab.test", None, None)])
        sessions = []
        for _ in range(3):
            c = IMAPClient(s.host, s.imap_port, ssl=False, timeout=10)
            c.login("limit@lab.test", cfg.default_user_password)
            sessions.append(c)
        extra = IMAPClient(s.host, s.imap_port, ssl=False, timeout=3)
        with pytest.raises(OSError):                   # login never completes: timeout
            extra.login("limit@lab.test", cfg.default_user_password)
        for c in sessions:
            c.logout()
        assert "process_limit (3) reached" in Path(s.log_dir, "dovecot.log").read_text()

        # idempotent; a killed service (stale pidfile) is restarted
        slack_pid = int((root / "run" / "slack-standin.pid").read_text())
        os.kill(slack_pid, signal.SIGKILL)
        time.sleep(0.3)
        r = _lab("status", env)
        assert r.returncode != 0 and re.search(r"slack-standin\s+DOWN", r.stdout)
        r = _lab("up", env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("already running") == 9 and "slack-standin" in r.stdout
        assert json.loads((root / "lab.json").read_text())["secrets"] == state["secrets"]

        r = _lab("down", env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "leftover" not in r.stdout
        assert not proc.processes_mentioning([str(root), state["pg"]["dir"]])
        assert not any(proc.port_listening("127.0.0.1", p) for p in ports)
        r = _lab("status", env)
        assert r.returncode != 0 and r.stdout.count("DOWN") == 10

        r = _lab("up", env)                             # and back up from cold
        assert r.returncode == 0, r.stdout + r.stderr
        assert _lab("status", env).returncode == 0
    finally:
        _lab("down", env)
        leftovers = proc.processes_mentioning([str(root)])
        proc.kill9([p for p, _ in leftovers])
        subprocess.run(["rm", "-rf", str(root)])
        assert not leftovers


def test_cyrus_servers(lab_config):
    """The lab's non-Dovecot servers (Cyrus IMAP 3.6, `lab.cyrus`): legacy without a master user
    (own password only, IMAP + POP3, no STARTTLS), POP3-only legacy, and the destination."""
    import secrets as _secrets

    from lab.cyrus import Cyrus, deliver_lmtp

    cfg = lab_config
    assert set(cfg.cyrus) == {"cyrus-legacy", "cyrus-pop", "cyrus-dest"}
    legacy, pop, dest = (cfg.cyrus[n] for n in ("cyrus-legacy", "cyrus-pop", "cyrus-dest"))
    assert legacy["admin_user"] is None and pop["admin_user"] is None and dest["admin_user"] == "cyradmin"
    assert pop["imap_port"] is None and proc.port_listening("127.0.0.1", pop["pop3_port"])
    login, pw = f"c{uuid.uuid4().hex[:10]}", _secrets.token_urlsafe(10)
    for info in (legacy, pop):
        Cyrus(info, cfg.root / "run").set_password(login, pw)
    c = IMAPClient(legacy["host"], legacy["imap_port"], ssl=False, timeout=10)
    assert b"STARTTLS" not in c.capabilities()
    c.login(login, pw)
    assert c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
    c.logout()
    c = IMAPClient(legacy["host"], legacy["imap_port"], ssl=False, timeout=10)
    with pytest.raises(LoginError):
        c.login(login, pw + "x")
    deliver_lmtp(pop, login, [b"Subject: one\r\n\r\nbody\r\n"])
    p = poplib.POP3(pop["host"], pop["pop3_port"], timeout=10)
    p.user(login)
    p.pass_(pw)
    assert len(p.uidl()[1]) == 1
    p.close()
