"""Audit CLI storage: pop3-logs (fixture excerpts) and rules (source vs destination exports)
into a fresh database; re-runs are idempotent and resolve what is gone."""
import json
from pathlib import Path

import psycopg2

from mailshift import cli
from support.mail import fresh_database

FIX = Path(__file__).parents[1] / "unit" / "fixtures" / "pop3logs"


def _cli(capsys, dsn, *argv):
    rc = cli.main(["--db", dsn, *argv])
    return rc, capsys.readouterr().out


def _setup(conn):
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port, tls,"
                    " max_connections, airflow_conn_id) VALUES ('legacy', 'dovecot', 'h', 143, 110,"
                    " 'none', 4, 'c')")
        cur.execute("INSERT INTO domain (name) VALUES ('x.example')")
        cur.execute("INSERT INTO building (id, domain, source_system) VALUES ('B1', 'x.example', 'legacy')")
        for i, login in enumerate(["hanako..takahashi", "sato.ichiro", "takahashi.misaki.", "suzuki"]):
            cur.execute("INSERT INTO household (id, building_id) VALUES (%s, 'B1')", (f"H{i}",))
            cur.execute("INSERT INTO mailbox (household_id, address, source_login, protocol) VALUES"
                        " (%s, %s, %s, 'pop3')", (f"H{i}", f"{login}@x.example", login))


def _findings(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT m.source_login, f.kind, f.status FROM audit_finding f JOIN mailbox m"
                    " ON m.id = f.mailbox_id ORDER BY 1, 2")
        return cur.fetchall()


def test_pop3_and_rules_cli(lab_config, capsys, tmp_path):
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        _setup(conn)
        rc, out = _cli(capsys, dsn, "audit", "pop3-logs", str(FIX / "dovecot.log"),
                       str(FIX / "courier.log"), "--year", "2025")
        st = json.loads(out)
        assert rc == 0 and st["malformed"] == 4 and st["mailboxes"] == 4
        assert st["unknown_logins"] == 1  # poptest2 is not in this inventory
        # the normal logs cannot show LAST: unknown for all; Courier cannot show APOP or DELE
        assert _findings(conn) == [("hanako..takahashi", "pop3_apop", "open"),
                                   ("hanako..takahashi", "pop3_last_unknown", "open"),
                                   ("sato.ichiro", "pop3_last_unknown", "open"),
                                   ("sato.ichiro", "pop3_leave_on_server", "open"),
                                   ("suzuki", "pop3_apop_unknown", "open"),
                                   ("suzuki", "pop3_last_unknown", "open"),
                                   ("suzuki", "pop3_leave_on_server_unknown", "open"),
                                   ("takahashi.misaki.", "pop3_apop_unknown", "open"),
                                   ("takahashi.misaki.", "pop3_last_unknown", "open"),
                                   ("takahashi.misaki.", "pop3_leave_on_server_unknown", "open")]

        src, dst = tmp_path / "src", tmp_path / "dst"
        (src / "sato.ichiro@x.example").mkdir(parents=True)
        (src / "sato.ichiro@x.example" / ".dovecot.sieve").write_text(
            'require "vacation";\nredirect "alarm@kanri.example";\nvacation "away";\n')
        (src / "suzuki").mkdir()
        (src / "suzuki" / ".forward").write_text("\\suzuki, |/usr/bin/pager\n")
        rc, out = _cli(capsys, dsn, "audit", "rules", str(src))
        assert rc == 0 and json.loads(out)["findings"] == 3
        (dst / "sato.ichiro@x.example").mkdir(parents=True)
        (dst / "sato.ichiro@x.example" / "main.sieve").write_text(
            'require "vacation";\nredirect "alarm@kanri.example";\nvacation "away";\n')
        rc, out = _cli(capsys, dsn, "audit", "rules", str(src), "--dest", str(dst))
        assert json.loads(out)["resolved"] == 2
        got = [f for f in _findings(conn) if f[1].startswith("rule_")]  # noqa: E501
        assert got == [("sato.ichiro", "rule_autoreply_lost", "resolved"),
                       ("sato.ichiro", "rule_forward_lost", "resolved"),
                       ("suzuki", "rule_program_lost", "open")]

        rc, out = _cli(capsys, dsn, "audit", "addresses", "--list")
        st = json.loads(out)
        assert st["counts"] == {"consecutive_dots": 1, "trailing_dot": 1}
        assert sorted(r["new_address"] for r in st["renames_list"]) == [
            "hanako.takahashi@x.example", "takahashi.misaki@x.example"]
        rc, out = _cli(capsys, dsn, "audit", "addresses")   # idempotent
        assert json.loads(out)["resolved"] == 0
        rc, out = _cli(capsys, dsn, "audit", "report", "B1", "--csv")
        assert "pop3_apop,1,0,1,1" in out and "rule_program_lost,1,0,1,1" in out
        conn.close()
