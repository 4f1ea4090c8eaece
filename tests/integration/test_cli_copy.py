"""`mailshift copy` as an operator runs it: JSON summary on stdout, clear errors, exit codes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from lab.connections import airflow_conn_env
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from support.mail import add_mailbox, fresh_database, imap, unique_login

pytestmark = pytest.mark.integration
MAILSHIFT = str(Path(sys.executable).with_name("mailshift"))


def _run(args, env):
    return subprocess.run([MAILSHIFT, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def setup(lab_config):
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        mb = add_mailbox(conn, lab_config, "src-b", unique_login("cli"), "imap")
        with imap(lab_config, "src-b", mb.source_login) as c:
            msgs = [OutgoingMessage((), dt.datetime(2020, 1, 1, tzinfo=dt.UTC), f"Subject: {i}\r\n\r\nx\r\n".encode())
                    for i in range(7)]
            assert multiappend(c, "INBOX", msgs).ok
        env = {**os.environ, **airflow_conn_env(lab_config), "MAILSHIFT_DB_URL": dsn}
        yield mb, env
        conn.close()


def test_copy_prints_a_json_summary(setup):
    mb, env = setup
    r = _run(["copy", mb.address, "--pass", "prestage"], env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["copied"], summary["refused"], summary["pass_kind"]) == (7, 0, "prestage")
    again = json.loads(_run(["copy", mb.address, "--pass", "delta"], env).stdout)
    assert (again["copied"], again["already"]) == (0, 7)
    status = json.loads(_run(["status", "--json"], env).stdout)
    assert status["messages"]["copied"]["count"] == 7


def test_copy_errors_are_clear(setup):
    mb, env = setup
    r = _run(["copy", "nobody@nowhere.test"], env)
    assert r.returncode == 2 and "no mailbox 'nobody@nowhere.test'" in r.stderr
    no_conn = {k: v for k, v in env.items() if k != "AIRFLOW_CONN_MAILSHIFT_DEST"}
    r = _run(["copy", mb.address], no_conn)
    assert r.returncode == 3 and "AIRFLOW_CONN_MAILSHIFT_DEST" in r.stderr     # 3: configuration
    r = _run(["copy", mb.address, "--pass", "sideways"], env)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    no_db = {k: v for k, v in env.items() if k != "MAILSHIFT_DB_URL"}
    r = _run(["status"], no_db)
    assert r.returncode == 3 and "MAILSHIFT_DB_URL" in r.stderr     # 3: configuration


def test_wrong_admin_password_fails_fast_without_leaking_it(setup, lab_config):
    mb, env = setup
    doc = json.loads(env["AIRFLOW_CONN_MAILSHIFT_SRC_B"])
    doc["password"] = "definitely-wrong-S3cret"
    r = _run(["copy", mb.address], {**env, "AIRFLOW_CONN_MAILSHIFT_SRC_B": json.dumps(doc)})
    assert r.returncode == 4 and "login refused" in r.stderr     # 4: authentication refused
    assert "definitely-wrong-S3cret" not in r.stderr + r.stdout
