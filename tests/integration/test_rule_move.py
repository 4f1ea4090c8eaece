"""Issue #15, item 7: a household's Sieve script, .forward and .qmail rules are moved to the lab
destination over ManageSieve (Pigeonhole), read back and compared: nothing movable is lost; a
rule that cannot move (a program) is a finding and the customer is on the notice list."""
import json
import os
import socket

import psycopg2
import pytest

from lab import users
from lab.connections import airflow_conn_env
from mailshift import cli
from mailshift.customers import notices
from mailshift.protocols.endpoint import endpoint_from_env
from mailshift.protocols.managesieve import SieveSession
from support.mail import fresh_database, unique_login


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sieve_lab(lab_config, monkeypatch, tmp_path):
    cfg = lab_config
    port = getattr(cfg, "managesieve_port", cfg.port_base + 41)
    if not _listening(port):   # like the lab itself: a failure where the lab is required (CI)
        why = (f"no ManageSieve on 127.0.0.1:{port}: the lab dest Dovecot was started before "
               "dovecot-managesieved was installed; restart it (make lab-down lab-up)")
        (pytest.fail if os.environ.get("MAILSHIFT_REQUIRE_LAB") == "1" else pytest.skip)(why)
    for k, v in airflow_conn_env(cfg).items():
        monkeypatch.setenv(k, v)
    people = {k: unique_login("rm") for k in ("A", "B")}
    addrs = {k: f"{v}@rules.lab.mailshift.test" for k, v in people.items()}
    users.ensure_users(cfg, "dest", [(a, None, None) for a in addrs.values()])
    with fresh_database(cfg) as dsn:
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, tls,"
                        " max_connections, airflow_conn_id) VALUES ('s', 'qmail', 'h', 143,"
                        " 'none', 1, 'c')")
            cur.execute("INSERT INTO domain (name) VALUES ('rules.lab.mailshift.test')")
            cur.execute("INSERT INTO building (id, domain, source_system) VALUES ('B1',"
                        " 'rules.lab.mailshift.test', 's')")
            for k in people:
                cur.execute("INSERT INTO household (id, building_id) VALUES (%s, 'B1')", (f"H{k}",))
                cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login,"
                            " protocol) VALUES (%s, %s, %s, %s, 'imap')",
                            (f"H{k}", addrs[k], people[k], addrs[k]))
        yield cfg, dsn, conn, people, addrs, port
        conn.close()
    users.remove_users(cfg, "dest", list(addrs.values()))


def test_move_sieve_forward_qmail_over_managesieve(sieve_lab, capsys, tmp_path):
    cfg, dsn, conn, people, addrs, port = sieve_lab
    src = tmp_path / "legacy-rules"
    a = src / people["A"]                   # directory named by the legacy login
    a.mkdir(parents=True)
    (a / ".dovecot.sieve").write_text(
        'require ["vacation", "fileinto"];\n'
        'if header :contains "subject" "invoice" { fileinto "Invoices"; }\n'
        'vacation :subject "Away" "I am away until Monday.";\n', encoding="utf-8")
    (a / ".forward").write_text(f"\\{people['A']}, family@example.net\n")
    (a / ".qmail").write_text("&office@example.org\n./Maildir/\n")
    b = src / addrs["B"]
    b.mkdir()
    (b / ".qmail").write_text("|/usr/local/bin/sms-notify\n&keitai@example.jp\n")

    rc, out, err = cli.main(["--db", dsn, "audit", "move-rules", str(src),
                             "--sieve-port", str(port)]), *capsys.readouterr()
    st = json.loads(out)
    assert rc == 1, err                      # 1: a rule could not move (B's program)
    assert st["installed"][addrs["A"]] == ["legacy-dovecot", "mailshift-migrated"]
    assert st["not_movable"] == [{"mailbox": addrs["B"], "rule": f"{addrs['B']}/.qmail:1",
                                  "why": "pipe to program '/usr/local/bin/sms-notify': the new "
                                         "service runs no programs"}]
    with conn.cursor() as cur:
        cur.execute("SELECT m.address, f.kind, f.status FROM audit_finding f JOIN mailbox m"
                    " ON m.id = f.mailbox_id ORDER BY 1, 2")
        found = cur.fetchall()
    conn.rollback()
    # the comparison after the move: nothing of A lost; B's program is the only finding
    assert found == [(addrs["B"], "rule_program_lost", "open")]

    # what the destination really runs, read over ManageSieve by a separate session
    with SieveSession(endpoint_from_env("mailshift_dest"), addrs["A"], port) as s:
        active, _ = s.scripts()
        main = s.get(active)
    assert active == "mailshift-migrated"
    assert 'include :personal "legacy-dovecot";' in main
    assert 'redirect :copy "family@example.net";' in main
    assert 'redirect :copy "office@example.org";' in main

    hhs = notices.households(conn, building="B1")
    assert not hhs["HA"].affected
    assert [k for _m, _a, k, _t in hhs["HB"].changes] == ["rule_program_lost"]
    rows = notices.export_list(conn, "letter", building="B1")
    assert [r["household_id"] for r in rows] == ["HB"] and "sms-notify" in rows[0]["changes"]

    # moving again is idempotent
    rc = cli.main(["--db", dsn, "audit", "move-rules", str(src), "--sieve-port", str(port)])
    st = json.loads(capsys.readouterr().out)
    assert rc == 1 and st["resolved"] == 0 and st["findings"] == 1
