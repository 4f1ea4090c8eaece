"""`mailshift check SYSTEM` (issue #16): against every IMAP server of the lab, as the operator runs it
(a subprocess with the AIRFLOW_CONN_* variables), plus the rules of "what will not work"."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from mailshift.cli import check
from mailshift.protocols.endpoint import parse_endpoint

MSG = b"From: a@example.net\r\nTo: b@example.net\r\nSubject: check\r\n\r\nhello\r\n"


def test_uidl_formats():
    assert check.uidl_format(["0000000154a2b1c3", "0000000254a2b1c3"])["format"].startswith("dovecot")
    assert check.uidl_format(["1234567.1", "1234567.2"])["format"].startswith("cyrus")
    odd = check.uidl_format(["a b", "a b"])
    assert odd["unique"] is False and odd["rfc1939_ok"] is False
    assert check.uidl_format([])["format"] == "no messages to tell"


def _rep(**kw):
    base = {"auth": [{"mode": "master", "ok": True}], "auth_mode_that_works": "master",
            "capabilities": ["IMAP4REV1", "UIDPLUS", "MULTIAPPEND", "LITERAL+", "APPENDLIMIT=1000"], "appendlimit": 1000}
    return {**base, **kw}


def test_wont_work_rules():
    lan = parse_endpoint("imap://admin:pw@mail.example.net:143?tls=none&allow_plaintext=true")
    assert any("in clear" in w for w in check.wont_work(lan, _rep(), {"configured": False}))
    loop = parse_endpoint("imap://admin:pw@127.0.0.1:143?tls=none")
    assert check.wont_work(loop, _rep(), {"configured": False}) == []
    slow = check.wont_work(loop, _rep(capabilities=["IMAP4REV1"], appendlimit=None), {"configured": False})
    assert {w.split(":")[0] for w in slow} >= {"no APPENDUID", "no MULTIAPPEND", "no LITERAL+", "no APPENDLIMIT"}
    tls = _rep(tls={"expires": "Jan  5 00:00:00 2027 GMT"})
    assert any("expires in 4 days" in w for w in check.wont_work(loop, tls, {"configured": False},
                                                                 today=dt.date(2027, 1, 1)))
    refused = _rep(auth=[{"mode": "master", "ok": False, "error": "login refused"}, {"mode": "authzid", "ok": True}],
                   auth_mode_that_works="authzid")
    assert "auth=authzid works" in check.wont_work(loop, refused, {"configured": False})[0]


@pytest.fixture(scope="module")
def lab_env(lab_config):
    from lab.connections import airflow_conn_env

    return {**os.environ, **airflow_conn_env(lab_config)}


def _mailbox(cfg, server: str) -> str:
    from lab import users
    from support.mail import imap, unique_login

    login = unique_login("ck")
    if server == "dest":
        login += "@lab.mailshift.test"
    users.ensure_users(cfg, server, [(login, None, None)])
    users.reset_mailbox(cfg, server, login)
    with imap(cfg, server, login) as c:
        prefix, sep = c.namespace().personal[0]
        c.create_folder(f"{prefix}Archive")
        c.append("INBOX", MSG)
        c.append("INBOX", MSG)
    return login


def _run(env, *argv):
    return subprocess.run([sys.executable, "-m", "mailshift.cli", *argv], env=env, capture_output=True,
                          text=True, timeout=120)


def test_check_every_lab_server(lab_config, lab_env):
    from lab.connections import airflow_connections

    servers = {cid: doc for cid, doc in airflow_connections(lab_config).items() if doc.get("conn_type") == "imap"}
    assert {"mailshift_src_a", "mailshift_src_b", "mailshift_dest"} <= set(servers)
    for cid in servers:
        system = "dest" if cid == "mailshift_dest" else cid.removeprefix("mailshift_").replace("_", "-")
        login = _mailbox(lab_config, system)
        r = _run(lab_env, "check", system, "--mailbox", login, "--json")
        assert r.returncode in (0, 1), r.stderr
        out = json.loads(r.stdout)
        imap = out["imap"]
        assert imap["auth_mode_that_works"] == "master", imap["auth"]
        assert "UIDPLUS" in imap["capabilities"] and imap["namespace"]["supported"]
        names = {f["name"] for f in imap["folders"]}
        assert "INBOX" in names and any(n.endswith("Archive") for n in names), names
        assert imap["messages"] == 2 and imap["separator"]
        assert out["pop3"]["ok"] and out["pop3"]["count"] == 2 and not out["pop3"]["format"].startswith("unrecognised")
        assert out["pop3"]["unique"] and out["pop3"]["rfc1939_ok"]
        screen = _run(lab_env, "check", system, "--mailbox", login)
        assert screen.returncode == r.returncode and "Traceback" not in screen.stderr
        for line in ("auth that works", "capabilities", "APPENDLIMIT", "namespace", "sample mailbox", "POP3"):
            assert line in screen.stdout, screen.stdout


def test_check_over_imaps_shows_tls(lab_config, lab_env):
    s = lab_config.servers["src-a"]
    doc = json.loads(lab_env["AIRFLOW_CONN_MAILSHIFT_SRC_A"])
    doc["port"] = s.imap_port + 20        # the lab's IMAPS port (base+21)
    doc["extra"] = {**doc["extra"], "tls": "imaps"}
    env = {**lab_env, "AIRFLOW_CONN_MAILSHIFT_SRC_A_TLS": json.dumps(doc)}
    login = _mailbox(lab_config, "src-a")
    out = json.loads(_run(env, "check", "src-a", "--conn", "mailshift_src_a_tls", "--mailbox", login, "--json").stdout)
    tls = out["imap"]["tls"]
    assert tls["mode"] == "imaps" and tls["version"].startswith("TLS") and tls["expires"]


def test_unreachable_server_is_one_line(lab_env):
    env = {**lab_env, "AIRFLOW_CONN_MAILSHIFT_NOWHERE": "imap://admin:pw@127.0.0.1:9?tls=none&timeout=3"}
    r = _run(env, "check", "src-a", "--conn", "mailshift_nowhere", "--mailbox", "x")
    assert r.returncode == 5 and "Traceback" not in r.stderr
    assert r.stderr.startswith("mailshift: error: ") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["cyrus-legacy", "cyrus-pop", "cyrus-dest"])
def test_check_every_cyrus_server(lab_config, lab_env, tmp_path, name):
    """The lab's Cyrus servers: no master user (each mailbox's own password from a 0600
    credentials file), and one that offers POP3 only."""
    from lab.cyrus import deliver_lmtp
    from support import realservers as rs

    cfg = lab_config
    login, password = rs.new_user(cfg, name)
    if cfg.cyrus[name]["imap_port"]:
        with rs.imap(cfg, name, login, password) as c:
            c.append("INBOX", MSG)
            c.append("INBOX", MSG)
    else:
        deliver_lmtp(cfg.cyrus[name], login, [MSG, MSG])
    cred = rs.write_credentials(tmp_path / f"{name}.credentials", {login: password})
    env = {**lab_env, "AIRFLOW_CONN_" + rs.conn_id(name).upper(): rs.uri(cfg, name, "user", cred),
           "MAILSHIFT_IDENTITY_PROBE_CACHE": str(tmp_path / "probe-cache")}
    r = _run(env, "check", name, "--mailbox", login, "--json")
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    pop3 = out["pop3"]
    assert pop3["ok"] and pop3["count"] == 2 and pop3["format"].startswith("cyrus"), pop3
    if name == "cyrus-pop":
        assert out["imap"]["offered"] is False and out["wont_work"] == [] and r.returncode == 0
    else:
        imap = out["imap"]
        assert imap["auth_mode_that_works"] == "user" and imap["messages"] == 2, imap
        assert any(f["name"] == "INBOX" for f in imap["folders"])
    screen = _run(env, "check", name, "--mailbox", login)
    assert screen.returncode == r.returncode and "Traceback" not in screen.stderr
    assert ("not offered: POP3-only" in screen.stdout) == (name == "cyrus-pop"), screen.stdout
    assert password not in screen.stdout + screen.stderr + r.stdout + r.stderr
