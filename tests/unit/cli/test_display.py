"""Progress display of long commands (issue #16): a bar with rate and ETA on a terminal, nothing
when stderr is not a terminal or with --json, the copy's denominator is the source's count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from mailshift.cli import display
from support.terminal import run_on_pty

LOGS = sorted(str(p) for p in (Path(__file__).parents[1] / "fixtures" / "pop3logs").iterdir() if p.is_file())


def test_wanted():
    assert display.wanted(force=True)
    assert not display.wanted(json_output=True)
    assert display.wanted_by(SimpleNamespace(progress=False, json=False)) is False
    assert display.wanted_by(SimpleNamespace(progress=True, json=True)) is True
    assert display.wanted_by(SimpleNamespace(progress=None, json=True)) is False


def test_disabled_bar_is_silent(capsys):
    with display.progress("x", total=3, enabled=False) as bar:
        bar.advance(1)
        bar.update(completed=2, total=5)
    assert capsys.readouterr() == ("", "")


def test_copy_denominator_is_the_source_count():
    seen = []
    bar = SimpleNamespace(update=lambda **kw: seen.append(kw))
    cp = display.CopyProgress(bar, expected=620)
    cp(SimpleNamespace(source_messages=120, copied=100, already=10, refused=0, altered=0))   # first folder listed
    cp(SimpleNamespace(source_messages=620, copied=580, already=10, refused=2, altered=1))   # every folder listed
    cp(SimpleNamespace(source_messages=630, copied=590, already=10, refused=2, altered=1))   # mail arrived meanwhile
    assert seen[0]["total"] == 620 and seen[0]["completed"] == 110
    assert seen[1]["total"] == 620 and seen[1]["completed"] == 593 and seen[1]["note"] == "refused 2, altered 1"
    assert seen[2]["total"] == 630
    # not counted beforehand: the copier's growing count, never below what is done
    unknown = display.CopyProgress(bar)
    unknown(SimpleNamespace(source_messages=5, copied=7, already=0, refused=0, altered=0))
    assert seen[-1]["total"] == 7


def _cli(argv, tty: bool) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "mailshift.cli", *argv]
    if not tty:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return r.returncode, r.stderr
    return run_on_pty(cmd)


def test_audit_logs_bar_on_a_terminal_only():
    assert LOGS
    code, screen = _cli(["audit", "pop3-logs", "--dry-run", *LOGS], tty=True)
    assert code == 0, screen
    assert "reading POP3 logs" in screen and "ETA" in screen and "/s" in screen
    assert "━" in screen and "Traceback" not in screen
    code, err = _cli(["audit", "pop3-logs", "--dry-run", *LOGS], tty=False)
    assert code == 0 and "reading POP3 logs" not in err and "\x1b[" not in err


def test_verify_building_shows_mailboxes_done(lab_config, tmp_path):
    import psycopg2

    from lab.connections import airflow_conn_env
    from support.mail import add_mailbox, fresh_database, unique_login

    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        mb = add_mailbox(conn, lab_config, "src-a", unique_login("pv"))
        conn.close()
        env = {**os.environ, **airflow_conn_env(lab_config), "MAILSHIFT_DB_URL": dsn,
               "MAILSHIFT_REPORTS_DIR": str(tmp_path), "COLUMNS": "160"}
        r = subprocess.run([sys.executable, "-m", "mailshift.cli", "verify", "--building",
                            f"B-src-a-{mb.source_login}", "--progress"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert r.returncode in (0, 1), r.stderr
    assert f"verifying B-src-a-{mb.source_login}" in r.stderr and "1/1" in r.stderr and "ETA" in r.stderr
    assert '"verify_run_id"' in r.stdout
