"""Issue #15, the audit that never says "no" when it does not know: real Dovecot normal logs and
real rawlogs from the lab's legacy server, LAST found, unknown kept as unknown, unknown
households on the notice list until a person waives them by name; errors instead of empty
successes."""
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from lab import users
from mailshift import cli
from mailshift.customers import notices
from support.mail import fresh_database, unique_login
from support.rawlog import enable_rawlog, pop3_session, seed

FIX = Path(__file__).parents[1] / "unit" / "fixtures" / "pop3logs"


def _cli(capsys, dsn, *argv):
    rc = cli.main(["--db", dsn, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _facts(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT m.source_login, p.fact, p.value, p.source FROM pop3_fact p"
                    " JOIN mailbox m ON m.id = p.mailbox_id")
        return {(r[0], r[1]): (r[2], r[3]) for r in cur.fetchall()}


@pytest.fixture
def pop3_lab(lab_config, tmp_path):
    cfg = lab_config
    domain = f"t{uuid.uuid4().hex[:8]}.lab.mailshift.test"
    with fresh_database(cfg) as dsn:
        conn = psycopg2.connect(dsn)
        people = {k: unique_login("au") for k in ("LAST", "DELE", "PLAIN", "COURIER", "QUIET")}
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO domain (name) VALUES (%s)", (domain,))
            for sid, port in (("src-a", cfg.servers["src-a"].imap_port), ("courier", 143)):
                cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port,"
                            " tls, max_connections, airflow_conn_id) VALUES (%s, 'dovecot',"
                            " '127.0.0.1', %s, 110, 'none', 8, 'c')", (sid, port))
                cur.execute("INSERT INTO building (id, name, domain, source_system) VALUES"
                            " (%s, %s, %s, %s)", (f"B-{sid}", f"Maison {sid}", domain, sid))
            for k, login in people.items():
                sid = "courier" if k == "COURIER" else "src-a"
                cur.execute("INSERT INTO household (id, building_id, contact_name) VALUES"
                            " (%s, %s, %s)", (f"H-{k}", f"B-{sid}", f"Customer {k}"))
                cur.execute("INSERT INTO mailbox (household_id, address, source_login, protocol)"
                            " VALUES (%s, %s, %s, 'pop3')", (f"H-{k}", f"{login}@{domain}", login))
        logins = [people[k] for k in ("LAST", "DELE", "PLAIN")]
        users.ensure_users(cfg, "src-a", [(lg, "pw-" + lg, None) for lg in logins])
        # the mail user writes the rawlogs: a directory it can reach (pytest's tmp is 0700)
        raw = Path(tempfile.mkdtemp(prefix="mailshift-rawlog-"))
        raw.chmod(0o755)
        for lg in logins:
            users.reset_mailbox(cfg, "src-a", lg)
            seed(cfg, "src-a", lg, 2)
        for lg in people["LAST"], people["DELE"]:
            enable_rawlog(cfg, "src-a", lg, raw)
        yield cfg, dsn, conn, domain, people, raw
        conn.close()
        users.remove_users(cfg, "src-a", logins)
        shutil.rmtree(raw, ignore_errors=True)


def test_rawlog_last_unknown_kept_and_notice_list(pop3_lab, capsys, tmp_path):
    cfg, dsn, conn, domain, p, raw = pop3_lab
    pw = {k: "pw-" + v for k, v in p.items()}
    # LAST: a mail program that uses LAST and keeps mail; DELE: deletes what it fetched;
    # PLAIN: no rawlog at all (the normal log cannot show LAST)
    pop3_session(cfg, "src-a", p["LAST"], pw["LAST"], last=True, uidl=True, retr=[1, 2])
    pop3_session(cfg, "src-a", p["DELE"], pw["DELE"], uidl=True, retr=[1], dele=[1])
    pop3_session(cfg, "src-a", p["PLAIN"], pw["PLAIN"], retr=[1, 2], dele=[1, 2])
    time.sleep(0.5)
    log = Path(cfg.servers["src-a"].log_dir) / "dovecot.log"
    # a garbled rawlog line is counted for its file, never fatal
    bad = raw / p["DELE"] / "20260101-000000.1.1.in"
    bad.write_bytes(b"1796598128.1 UIDL\r\n\x00\x01 garbage\r\n1796598128.2 QUIT\r\n")
    bad.chmod(0o644)

    rc, out, err = _cli(capsys, dsn, "audit", "pop3-logs", str(log), str(raw),
                        "--source-system", "src-a")
    assert rc == 0, err
    st = json.loads(out)
    assert st["files"][str(bad)]["malformed"] == 1 and st["malformed"] >= 1
    assert any(f["kind"] == "rawlog-out" for f in st["files"].values())
    assert st["unseen_pop3_mailboxes"] == 1          # QUIET never logged in: all unknown
    f = _facts(conn)
    assert f[(p["LAST"], "last")] == ("yes", "dovecot rawlog")
    assert f[(p["LAST"], "leave_on_server")][0] == "yes"
    assert f[(p["LAST"], "uidl")] == ("yes", "dovecot rawlog")
    assert f[(p["DELE"], "last")] == ("no", "dovecot rawlog")
    assert f[(p["DELE"], "leave_on_server")][0] == "no"
    assert f[(p["PLAIN"], "last")] == ("unknown", "dovecot log")      # never a silent "no"
    assert f[(p["PLAIN"], "apop")] == ("no", "dovecot log")
    assert f[(p["PLAIN"], "leave_on_server")] == ("no", "dovecot log")
    assert f[(p["QUIET"], "apop")][0] == "unknown"

    # unknown households are on the letter list; a waiver by name takes one off
    rows = notices.export_list(conn, "letter", building="B-src-a")
    assert {r["household_id"] for r in rows} == {"H-LAST", "H-PLAIN", "H-QUIET"}
    plain = next(r for r in rows if r["household_id"] == "H-PLAIN")
    assert "LAST" in plain["changes"] and "could not tell" in plain["changes"]
    rc, out, err = _cli(capsys, dsn, "audit", "waive", "pop3_last_unknown", "--building",
                        "B-src-a", "--mailbox", f"{p['PLAIN']}@{domain}", "--by", "",
                        "--reason", "x")
    assert rc == 2 and "name of the person" in err
    rc, out, err = _cli(capsys, dsn, "audit", "waive", "pop3_last", "--building", "B-src-a",
                        "--by", "Sato", "--reason", "x")
    assert rc == 2 and "only unknowns" in err
    rc, out, err = _cli(capsys, dsn, "audit", "waive", "pop3_last_unknown", "--building",
                        "B-src-a", "--mailbox", f"{p['PLAIN']}@{domain}", "--by", "Sato Ichiro",
                        "--reason", "support desk confirmed Thunderbird 115")
    assert rc == 0, err
    hhs = notices.households(conn, building="B-src-a")
    assert not hhs["H-PLAIN"].affected and hhs["H-QUIET"].affected

    # the Courier building: everything unknown, the report shows it (it used to be empty)
    rc, out, err = _cli(capsys, dsn, "audit", "pop3-logs", str(FIX / "courier.log"),
                        "--source-system", "courier", "--year", "2025")
    assert rc == 0, err
    rc, out, err = _cli(capsys, dsn, "audit", "report", "B-courier")
    kinds = {r["kind"]: r for r in json.loads(out)}
    assert kinds["fact_leave_on_server_unknown"]["mailboxes"] == 1
    assert kinds["pop3_last_unknown"]["open"] == 1 and kinds["households_affected"]["open"] == 1
    rc, out, err = _cli(capsys, dsn, "audit", "report", "B-src-a")
    kinds = {r["kind"]: r for r in json.loads(out)}
    assert kinds["fact_last_yes"]["mailboxes"] == 1 and kinds["fact_last_no"]["mailboxes"] == 1
    assert kinds["waived_pop3_last_unknown"]["open"] == 1


def test_no_empty_success_no_traceback(lab_config, capsys, tmp_path):
    with fresh_database(lab_config) as dsn:
        cases = [
            (("notices", "gate", "nosuch.example"), 2, "unknown domain 'nosuch.example'"),
            (("notices", "export", "letters", "--building", "B-nope"), 2, "unknown building"),
            (("notices", "send", "1", "--domain", "nosuch.example", "--smtp", "127.0.0.1:1"), 2,
             "unknown domain"),
            (("notices", "send", "0", "--domain", "x.example", "--smtp", "127.0.0.1:1"), 2,
             "rounds start at 1"),
            (("audit", "report", "B-nope"), 2, "unknown building"),
            (("audit", "report", "--wave", "99"), 2, "unknown wave"),
            (("audit", "addresses", "--building", "B-nope"), 2, "unknown building"),
            (("audit", "rules", str(tmp_path / "missing")), 2, "no such directory"),
            (("audit", "pop3-logs", str(tmp_path / "missing.log")), 2, "missing.log"),
            (("audit", "pop3-logs", str(FIX), "--source-system", "nope"), 2,
             "unknown source system"),
        ]
        for argv, code, text in cases:
            rc, out, err = _cli(capsys, dsn, *argv)
            assert (rc, out) == (code, ""), (argv, rc, out, err)
            last = err.strip().splitlines()[-1]
            assert last.startswith("mailshift: error: ") and text in last, (argv, err)
            assert "Traceback" not in err
        # an SMTP relay nobody listens on: one line, exit 5, not a traceback
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, tls,"
                        " max_connections, airflow_conn_id) VALUES ('s', 'd', 'h', 143, 'none',"
                        " 1, 'c')")
            cur.execute("INSERT INTO domain (name) VALUES ('x.example')")
            cur.execute("INSERT INTO building (id, domain, source_system) VALUES ('B1',"
                        " 'x.example', 's')")
            cur.execute("INSERT INTO household (id, building_id) VALUES ('H1', 'B1')")
            cur.execute("INSERT INTO mailbox (household_id, address, source_login, protocol)"
                        " VALUES ('H1', 'a@x.example', 'a', 'pop3')")
        conn.close()
        rc, out, err = _cli(capsys, dsn, "notices", "send", "1", "--domain", "x.example",
                            "--smtp", "127.0.0.1:1")
        assert rc == 5 and "SMTP relay 127.0.0.1:1 unreachable" in err and "Traceback" not in err
        rc, out, err = _cli(capsys, dsn, "notices", "gate", "x.example")
        assert rc == 0 and json.loads(out) == {"domain": "x.example", "ok": True, "reasons": []}
