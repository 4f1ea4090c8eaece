"""Issue #15, item 2: the destination capability probe on real lab servers. The lab destination
keeps POP3 UIDLs through X-UIDL (pop3_reuse_xuidl); a destination that does not (the lab's
src-a Dovecot, probed as if it were one) puts every POP3 household whose leave-on-server is
yes or unknown on the notice list, with that reason, before the gate."""
import json
from pathlib import Path

import psycopg2
import pytest

from lab import users
from lab.connections import airflow_conn_env
from mailshift import cli
from mailshift.customers import audit, notices, pop3logs
from support.mail import fresh_database, imap, unique_login

FIX = Path(__file__).parents[1] / "unit" / "fixtures" / "pop3logs"


def _cli(capsys, dsn, *argv):
    rc = cli.main(["--db", dsn, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def probe_env(lab_config, monkeypatch):
    cfg = lab_config
    for k, v in airflow_conn_env(cfg).items():
        monkeypatch.setenv(k, v)
    acct_dest = unique_login("probe") + "@probe.lab.mailshift.test"
    acct_src = unique_login("probe")
    users.ensure_users(cfg, "dest", [(acct_dest, None, None)], wait=False)
    users.ensure_users(cfg, "src-a", [(acct_src, None, None)])
    users.reset_mailbox(cfg, "dest", acct_dest)
    users.reset_mailbox(cfg, "src-a", acct_src)
    with fresh_database(cfg) as dsn:
        yield cfg, dsn, acct_dest, acct_src
    users.remove_users(cfg, "dest", [acct_dest], wait=False)
    users.remove_users(cfg, "src-a", [acct_src])


def _setup(conn, destination):
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, tls,"
                    " max_connections, airflow_conn_id) VALUES ('legacy', 'dovecot', 'h', 143,"
                    " 'none', 4, 'c')")
        cur.execute("INSERT INTO domain (name) VALUES ('x.example')")
        cur.execute("INSERT INTO building (id, domain, source_system, spec) VALUES ('B1',"
                    " 'x.example', 'legacy', %s)", (json.dumps({"destination": destination}),))
        for i, login in enumerate(["sato.ichiro", "hanako..takahashi"]):
            cur.execute("INSERT INTO household (id, building_id) VALUES (%s, 'B1')", (f"H{i}",))
            cur.execute("INSERT INTO mailbox (household_id, address, source_login, protocol)"
                        " VALUES (%s, %s, %s, 'pop3')", (f"H{i}", f"{login}@x.example", login))


def _set_destination(conn, destination):
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE building SET spec = %s WHERE id = 'B1'",
                    (json.dumps({"destination": destination}),))


def test_probe_and_uidl_notice(probe_env, capsys):
    cfg, dsn, acct_dest, acct_src = probe_env
    rc, out, err = _cli(capsys, dsn, "audit", "probe-destination", "--account", acct_dest)
    assert rc == 0, err
    cap = json.loads(out)
    assert cap["keeps_uidl"] is True and "X-UIDL" in cap["uidl_detail"]
    assert cap["appendlimit"] == cfg.dest.max_mail_size
    assert cap["size_behaviour"]["over_limit_refused"] is True
    assert cap["folder_rules"]["prefix"] == "" and cap["folder_rules"]["separator"] == "/"
    assert cap["folder_rules"]["non_ascii"] is True and cap["folder_rules"]["nested"] is True
    assert cap["quota_behaviour"]["quota"][0]["resource"] == "STORAGE"
    rc, out, err = _cli(capsys, dsn, "audit", "probe-destination", "--account", acct_src,
                        "--destination", "mailshift_src_a")
    assert rc == 1 and json.loads(out)["keeps_uidl"] is False      # 1: it does not keep them
    for server, acct in (("dest", acct_dest), ("src-a", acct_src)):   # nothing left behind
        with imap(cfg, server, acct) as c:
            c.select_folder("INBOX", readonly=True)
            assert c.search("ALL") == []
            assert not [f for f in c.list_folders() if "Mailshift" in f[2]]

    conn = psycopg2.connect(dsn)
    _setup(conn, "mailshift_dest")
    audit.run_pop3_audit(conn, pop3logs.parse_files([FIX / "dovecot.log"], year=2025),
                         source_system="legacy")
    assert _cli(capsys, dsn, "audit", "waive", "pop3_last_unknown", "--building", "B1", "--by",
                "Suzuki (operations)", "--reason", "rawlogs show no LAST")[0] == 0
    hhs = notices.households(conn, building="B1")
    assert not hhs["H0"].affected            # leave-on-server, and the destination keeps UIDLs
    assert [k for _m, _a, k, _t in hhs["H1"].changes] == ["pop3_apop", "address_consecutive_dots"]

    _set_destination(conn, "mailshift_src_a")       # a destination that does not keep them
    hhs = notices.households(conn, building="B1")
    (change,) = hhs["H0"].changes
    assert change[2] == "pop3_leave_on_server" and "cannot keep the message numbers" in change[3]
    reasons = notices.notice_gate_check(conn, "x.example")
    assert any(r.detail.startswith("household H0 ") and "pop3_leave_on_server" in r.detail
               for r in reasons)
    rc, out, _ = _cli(capsys, dsn, "audit", "report", "B1")
    assert "dest_keeps_uidl_no" in {r["kind"] for r in json.loads(out)}

    _set_destination(conn, "never_probed")          # unknown is not "kept"
    assert "have not been able to confirm" in notices.households(conn, building="B1")["H0"].changes[0][3]
    conn.close()
