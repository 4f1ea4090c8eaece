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
from support.terminal import run_on_pty

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


def _fill_folders(lab_config, mb, counts: dict[str, int]) -> None:
    with imap(lab_config, "src-b", mb.source_login) as c:
        for folder, n in counts.items():
            if folder != "INBOX":
                c.create_folder(folder)
            msgs = [OutgoingMessage((), dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                                    f"Subject: {folder} {i}\r\n\r\nx\r\n".encode()) for i in range(n)]
            assert multiappend(c, folder, msgs).ok


def test_copy_progress_denominator_is_the_mailbox_count_from_the_start(setup, lab_config, monkeypatch):
    """Issue #16: the bar's total is the mailbox's message count at the source from the first
    update on (it was the count of the folders listed so far: 7/7 after INBOX of 16)."""
    from types import SimpleNamespace

    from mailshift.cli import display
    from mailshift.cli.copy import source_count
    from mailshift.copy.copy_one import copy_one
    from mailshift.protocols.endpoint import endpoint_from_env

    mb, env = setup
    _fill_folders(lab_config, mb, {"INBOX.Alpha": 5, "INBOX.Beta": 4})    # + 7 in INBOX
    for key in ("AIRFLOW_CONN_MAILSHIFT_SRC_B", "AIRFLOW_CONN_MAILSHIFT_DEST"):
        monkeypatch.setenv(key, env[key])
    expected = source_count(endpoint_from_env("mailshift_src_b"), mb.source_login)
    assert expected == 16
    seen = []
    bar = SimpleNamespace(update=lambda **kw: seen.append((kw["completed"], kw["total"])))
    conn = psycopg2.connect(env["MAILSHIFT_DB_URL"])
    try:
        summary = copy_one(conn, mb.address, "prestage", progress=display.CopyProgress(bar, expected),
                           batch_messages=2)
    finally:
        conn.close()
    assert summary.copied == 16 and summary.source_messages == 16
    assert len(seen) >= 8, seen                        # one update per batch of 2
    assert {total for _, total in seen} == {16}, seen
    assert [done for done, _ in seen] == sorted(done for done, _ in seen) and seen[-1] == (16, 16)


def test_copy_progress_bar_on_a_terminal_only(setup, lab_config):
    mb, env = setup
    _fill_folders(lab_config, mb, {"INBOX.Gamma": 3})          # 10 messages in all
    env = {**env, "COLUMNS": "160"}
    code, text = run_on_pty([MAILSHIFT, "copy", mb.address, "--pass", "prestage", "--batch-messages", "2"], env)
    assert code == 0, text
    assert "10/10" in text and "━" in text and "ETA" in text and "messages/s" in text, text
    import re

    assert {int(d) for d in re.findall(r"\b\d+/(\d+)\b", text)} == {10}, text      # never another total
    r = _run(["copy", mb.address, "--pass", "delta"], env)                  # not a terminal: no bar
    assert r.returncode == 0 and "10/10" not in r.stderr and "\x1b[" not in r.stderr
    assert json.loads(r.stdout)["already"] == 10
    r = _run(["copy", mb.address, "--pass", "delta", "--progress", "--json"], env)   # forced: a bar
    assert "10/10" in r.stderr
