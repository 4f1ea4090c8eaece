"""`mailshift` exit codes: every operational failure is one line `mailshift: error: ...` and the
documented code, never a traceback (mailshift.cli.errors)."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from mailshift import errors as E
from mailshift.cli import build_parser, errors, main
from mailshift.cli import db as cli_db

CLI_DIR = Path(errors.__file__).parent
UNREACHABLE_DB = "postgresql://x@127.0.0.1:1/none"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mailshift: error: ")
    return lines[0]


def test_no_database_configured_is_a_config_error(monkeypatch, capsys):
    monkeypatch.delenv("MAILSHIFT_DB_URL", raising=False)
    assert main(["status"]) == errors.CONFIG == 3
    line = _one_error_line(capsys)
    assert line.startswith("mailshift: error: no database configured: pass --db or set MAILSHIFT_DB_URL")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_unreachable_database_is_transient(monkeypatch, capsys, how):
    monkeypatch.setenv("MAILSHIFT_DB_URL", UNREACHABLE_DB)
    argv = ["--db", UNREACHABLE_DB, "status"] if how == "option" else ["status"]
    assert main(argv) == errors.UNREACHABLE == 5
    line = _one_error_line(capsys)
    assert line.startswith("mailshift: error: database 127.0.0.1:1/none unreachable: ")
    assert line.endswith("run the command again (safe to retry)")


class _Verdict:
    domain = "example.test"

    def reason_texts(self):
        return ["mailbox a@example.test not proven"]


CASES = [
    (E.ConfigError("connection 'x' is not defined"), 3),
    (E.MigrationError("0003 is applied but missing"), 3),
    (E.AuthError("IMAP src-a as u: login refused: [AUTHENTICATIONFAILED]"), 4),
    (E.TransientError("IMAP src-a: timeout"), 5),
    (E.DnsError("SERVFAIL from 192.0.2.1"), 5),
    (E.NotServed("ns2 still serves the old MX", {}), 5),
    (E.ProtocolError("IMAP dest: BAD unexpected"), 6),
    (E.SwapInconsistent("zone serves something else"), 6),
    (E.UnknownMailbox("no mailbox 'x' in the inventory"), 2),
    (E.WaiverError("a waiver needs a reason (--reason)"), 2),
    (E.PlanError(["building B1: no domain", "days_between must be >= 1"]), 2),
    (E.InventoryError([]), 2),
    (E.RecordError(["line 2: unknown household 'H-x'"]), 2),
    (E.SnapshotError("manifest missing"), 2),
    (E.GateBlocked(_Verdict()), 1),
    (E.TtlNotReady("example.test", ["TTL 3600 not expired"]), 1),
    (E.FinalProofFailed(_Verdict()), 1),
    (E.SwapAlreadyApplied("applied; no rollback"), 1),
    (E.NotSwapped("swap first"), 1),
    (E.PrerequisiteMismatch("example.test", ["10 old."], ["10 other."]), 1),
    (E.ShardOverBudget("shard 3 took 400 s"), 1),
]


@pytest.mark.parametrize("exc,code", CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_each_error_class_maps_to_its_code_in_one_line(monkeypatch, capsys, exc, code):
    def fail(args):
        raise exc

    monkeypatch.setattr(cli_db, "cmd_db_status", fail)
    assert main(["db", "status"]) == code
    line = _one_error_line(capsys)
    assert line.startswith("mailshift: error: " + errors.one_line(exc))


def test_every_error_class_has_an_explicit_code():
    classes = [c for _, c in inspect.getmembers(E, inspect.isclass)
               if issubclass(c, E.MailshiftError) and c is not E.MailshiftError]
    unmapped = [c.__name__ for c in classes
                if not any(k in errors.EXIT_CODES for k in c.__mro__) and c.__name__ != "IdentityMismatch"]
    assert unmapped == [], "map these in mailshift/cli/errors.py EXIT_CODES"


def test_identity_mismatch_is_seven_by_name(monkeypatch, capsys):
    cls = getattr(E, "IdentityMismatch", None) or type("IdentityMismatch", (E.MailshiftError,), {})

    def fail(args):
        raise cls("dest is not the server the inventory names")

    monkeypatch.setattr(cli_db, "cmd_db_status", fail)
    assert main(["db", "status"]) == errors.IDENTITY == 7
    _one_error_line(capsys)


def test_database_failing_mid_command_is_one_line(monkeypatch, capsys):
    def fail(args):
        raise psycopg2.OperationalError("server closed the connection unexpectedly\n\tThis probably means ...")

    monkeypatch.setattr(cli_db, "cmd_db_status", fail)
    assert main(["--db", "postgresql://u:secret@db.example.net:5433/ms", "db", "status"]) == 5
    line = _one_error_line(capsys)
    assert "database db.example.net:5433/ms failed: server closed the connection unexpectedly" in line
    assert "secret" not in line


def test_missing_input_file_is_bad_input(capsys, tmp_path):
    missing = tmp_path / "nope.csv"
    assert main(["notices", "record", str(missing)]) == 2
    assert _one_error_line(capsys) == f"mailshift: error: {missing}: No such file or directory"


def test_no_smtp_relay_is_a_config_error(monkeypatch, capsys):
    monkeypatch.delenv("MAILSHIFT_SMTP", raising=False)
    assert main(["notices", "send", "1", "--domain", "example.test"]) == 3
    assert "pass --smtp HOST:PORT or set MAILSHIFT_SMTP" in _one_error_line(capsys)


def test_bad_usage_is_two():
    with pytest.raises(SystemExit) as exc:
        main(["copy", "a@example.test", "--pass", "sideways"])
    assert exc.value.code == 2


def test_one_line_joins_a_list():
    assert errors.one_line(E.PlanError(["a", "b"])) == "2 planning problem(s), nothing planned: a; b"


def test_exit_code_table_is_documented_and_in_help():
    assert errors.EPILOG in errors.__doc__
    assert errors.EPILOG in build_parser().format_help()


def test_entry_point_and_module_print_one_line_without_traceback():
    env = {k: v for k, v in os.environ.items() if k != "MAILSHIFT_DB_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(CLI_DIR.parents[1]), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "mailshift.cli", "status"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert r.stderr.startswith("mailshift: error: no database configured") and r.stderr.count("\n") == 1


def test_cli_holds_no_sql_no_lab_and_no_long_function():
    for path in sorted(CLI_DIR.glob("*.py")):
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n == "lab" or n.startswith("lab.") for n in names), path.name
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, f"{path.name}:{node.name}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                upper = node.value.upper()
                assert not any(k in upper for k in ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM")), \
                    f"{path.name}: SQL belongs in mailshift.store"
