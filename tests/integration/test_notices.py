"""A notice campaign in the lab: real Postfix (lab MTA) delivering over LMTP into the LEGACY
Dovecot mailboxes, letter/call CSVs, outcomes recorded with `mailshift notices record`, and the
cutover gate's notice condition."""
import csv
import io
import json
import poplib
import time
import uuid
from email import message_from_bytes, policy
from pathlib import Path

import psycopg2
import pytest

from lab import postfix, users
from mailshift import cli
from mailshift.customers import audit, notices, pop3logs
from mailshift.cutover.gate import NOTICE
from support.mail import fresh_database, imap, unique_login


def _inbox(cfg, server, login):
    with imap(cfg, server, login) as c:
        c.select_folder("INBOX", readonly=True)
        uids = c.search("ALL")
        if not uids:
            return []
        return [message_from_bytes(d[b"RFC822"], policy=policy.default)
                for _u, d in sorted(c.fetch(uids, ["RFC822"]).items())]


def _wait_mail(cfg, server, login, n, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        msgs = _inbox(cfg, server, login)
        if len(msgs) >= n or time.monotonic() > deadline:
            return msgs
        time.sleep(0.3)


def _cli(capsys, dsn, *argv):
    rc = cli.main(["--db", dsn, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def campaign_lab(lab_config):
    cfg = lab_config
    if not cfg.smtp_port:
        pytest.skip("lab has no MTA (run `python -m lab up`)")
    domain = f"n{uuid.uuid4().hex[:8]}.lab.mailshift.test"
    with fresh_database(cfg) as dsn:
        conn = psycopg2.connect(dsn)
        spec = {"notice_policy": {"email_rounds": 2, "letter": True, "call": True, "lead_days": 0}}
        # H1: legacy address with consecutive dots (src-a); H2: APOP user (src-b);
        # H3: nothing changes (src-a); H4: leave-on-server only (src-b) -> not affected
        people = {}
        for h, server in (("H1", "src-a"), ("H2", "src-b"), ("H3", "src-a"), ("H4", "src-b")):
            login = unique_login("nt")
            local = f"{login[:5]}..{login[5:]}" if h == "H1" else login
            people[h] = (server, login, f"{local}@{domain}")
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO domain (name) VALUES (%s)", (domain,))
            for s in ("src-a", "src-b"):
                cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port, tls,"
                            " max_connections, airflow_conn_id) VALUES (%s, 'dovecot', '127.0.0.1', %s,"
                            " %s, 'none', 8, %s)", (s, cfg.servers[s].imap_port, cfg.servers[s].pop3_port,
                                                    "mailshift_" + s.replace("-", "_")))
                cur.execute("INSERT INTO building (id, name, domain, source_system, spec) VALUES"
                            " (%s, %s, %s, %s, %s)", (f"B-{s}", f"Maison {s}", domain, s, json.dumps(spec)))
            for h, (server, login, address) in people.items():
                hid = f"{h}-{domain}"
                cur.execute("INSERT INTO household (id, building_id, contact_name, phone, postal_address)"
                            " VALUES (%s, %s, %s, %s, %s)",
                            (hid, f"B-{server}", f"Customer {h}", f"03-0000-000{h[1]}", f"{h[1]}0{h[1]} Lab Mansion"))
                cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login, protocol)"
                            " VALUES (%s, %s, %s, %s, 'pop3')", (hid, address, login, address))
        for server, login, _address in people.values():
            users.ensure_users(cfg, server, [(login, "pw-" + login, None)], wait=False)
        time.sleep(1.1)
        for server, login, _address in people.values():
            users.reset_mailbox(cfg, server, login)
        postfix.set_routes(cfg, {a: (s, lg) for s, lg, a in people.values()})
        yield cfg, dsn, conn, domain, {h: (s, lg, a, f"{h}-{domain}") for h, (s, lg, a) in people.items()}
        conn.close()


def test_campaign_mails_csvs_and_gate(campaign_lab, capsys, tmp_path):
    cfg, dsn, conn, domain, p = campaign_lab
    # the customers' real POP3 behaviour, read back from the legacy server's real log
    s, login, _a, _h = p["H2"]
    c = poplib.POP3(cfg.servers[s].host, cfg.servers[s].pop3_port)
    c.apop(login, "pw-" + login)
    c.quit()
    rc, out, _ = _cli(capsys, dsn, "audit", "addresses", "--domain", domain)
    assert rc == 0 and json.loads(out)["counts"] == {"consecutive_dots": 1}
    log = Path(cfg.servers["src-b"].log_dir) / "dovecot.log"
    res = pop3logs.parse_files([log])
    assert res.usage[login].apop_logins == 1
    # H4 keeps mail on the server (PLAIN logins, 3 sessions without DELE): the destination keeps
    # UIDLs (X-UIDL), and a person waived its unknown LAST by name: not affected, no letter/call
    h4 = res.get(p["H4"][1])
    h4.logins = h4.method_logins = 3
    h4.methods = {"PLAIN": 3}
    h4.method_sources = {"dovecot log"}
    h4.formats = {"dovecot"}
    h4.retr_sessions = h4.keep_sessions = 3
    h4.dele_sources = {"dovecot log"}
    audit.run_pop3_audit(conn, res, source_system="src-b")
    rc, out, err = _cli(capsys, dsn, "audit", "waive", "pop3_last_unknown", "--building", "B-src-b",
                        "--mailbox", p["H4"][2], "--by", "Sato (support desk)",
                        "--reason", "called: Outlook 2019, no LAST")
    assert rc == 0, err
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO dest_capability (destination, keeps_uidl, uidl_detail,"
                    " test_account) VALUES ('mailshift_dest', true, 'X-UIDL kept', 'probe')")

    reasons = notices.notice_gate_check(conn, domain)
    assert {r.kind for r in reasons} == {NOTICE}
    assert sorted((r.detail.split()[1], r.building) for r in reasons) == [
        (p["H1"][3], "B-src-a"), (p["H2"][3], "B-src-b")]
    assert "email round(s) 1,2 of 2 not sent" in reasons[0].detail and "no letter recorded" in reasons[0].detail

    for rnd in (1, 2):
        rc, out, err = _cli(capsys, dsn, "notices", "send", str(rnd), "--domain", domain,
                            "--smtp", f"{cfg.smtp_host}:{cfg.smtp_port}")
        assert rc == 0, err
        assert json.loads(out)["sent"] == 4
    rc, out, _ = _cli(capsys, dsn, "notices", "send", "1", "--domain", domain,
                      "--smtp", f"{cfg.smtp_host}:{cfg.smtp_port}")
    assert json.loads(out) == {"sent": 0, "already_sent": 4, "not_required": 0, "failed": []}
    rc, out, _ = _cli(capsys, dsn, "notices", "send", "3", "--domain", domain,
                      "--smtp", f"{cfg.smtp_host}:{cfg.smtp_port}")
    assert json.loads(out)["not_required"] == 4

    # the mails arrived in the LEGACY mailboxes, each naming what changes for that household
    for h, (server, login, address, hid) in p.items():
        msgs = _wait_mail(cfg, server, login, 2)
        assert len(msgs) == 2, (h, address)
        assert sorted(m["Subject"] for m in msgs) == [
            "Your mail service moves to a new provider (notice 1 of 2)",
            "Your mail service moves to a new provider (notice 2 of 2)"]
        body = msgs[0].get_content()
        assert f"household={hid}" in msgs[0]["X-Mailshift-Notice"]
        if h == "H1":
            assert "changes to" in body and address.replace("..", ".") in body
        elif h == "H2":
            assert "APOP" in body
        else:
            assert "Nothing changes for your household" in body

    reasons = notices.notice_gate_check(conn, domain)
    assert len(reasons) == 2 and all("email round" not in r.detail for r in reasons)

    # letter and call lists: exactly the affected households
    for ch in ("letters", "calls"):
        f = tmp_path / f"{ch}.csv"
        rc, _o, _e = _cli(capsys, dsn, "notices", "export", ch, "--domain", domain, "--csv", str(f))
        assert rc == 0
        rows = list(csv.DictReader(f.open()))
        assert sorted(r["household_id"] for r in rows) == [p["H1"][3], p["H2"][3]]
        assert all(r["status"] == "planned" for r in rows)
        assert rows[0]["postal_address"] and rows[0]["phone"]

    # a CSV with one bad row records nothing
    bad = tmp_path / "bad.csv"
    bad.write_text(f"household_id,channel,outcome\n{p['H1'][3]},letter,sent\nH-nope,call,reached\n")
    rc, _o, err = _cli(capsys, dsn, "notices", "record", str(bad), "--by", "ops")
    assert rc == 2 and "unknown household 'H-nope'" in err
    assert len(notices.notice_gate_check(conn, domain)) == 2

    out1 = tmp_path / "outcomes1.csv"
    out1.write_text("household_id,channel,outcome,at,by,note\n"
                    f"{p['H1'][3]},letter,sent,2026-01-05,post room,\n"
                    f"{p['H1'][3]},call,reached,2026-01-06T10:00:00+09:00,Sato (contact centre),ok\n"
                    f"{p['H2'][3]},letter,delivered,2026-01-05,post room,\n"
                    f"{p['H2'][3]},call,no_answer,2026-01-06T11:00:00+09:00,Sato (contact centre),\n")
    rc, out, err = _cli(capsys, dsn, "notices", "record", str(out1), "--by", "ops")
    assert rc == 0, err and json.loads(out) == {"recorded": 4}
    reasons = notices.notice_gate_check(conn, domain)
    assert reasons == [reasons[0]] and reasons[0].detail.startswith(f"household {p['H2'][3]} ")
    assert "call: customer not reached (last outcome no_answer)" in reasons[0].detail
    assert reasons[0].text().startswith("[notice_missing] building B-src-b: household ")
    rc, out, _ = _cli(capsys, dsn, "notices", "gate", domain)
    assert rc == 1 and json.loads(out)["ok"] is False      # 1: refused (mailshift.cli.errors.NO)

    out2 = tmp_path / "outcomes2.csv"
    out2.write_text(f"household_id,channel,outcome\n{p['H2'][3]},call,reached\n")
    assert _cli(capsys, dsn, "notices", "record", str(out2))[0] == 0
    assert notices.notice_gate_check(conn, domain) == []
    rc, out, _ = _cli(capsys, dsn, "notices", "gate", domain)
    assert rc == 0 and json.loads(out)["ok"] is True

    # reports: counts by finding type per building
    rc, out, _ = _cli(capsys, dsn, "audit", "report", "B-src-b", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    kinds = {r["kind"]: r for r in rows}
    assert kinds["pop3_apop"]["open"] == "1" and kinds["pop3_leave_on_server"]["open"] == "1"
    assert kinds["fact_last_unknown"]["mailboxes"] == "2" and kinds["fact_apop_yes"]["mailboxes"] == "1"
    assert kinds["waived_pop3_last_unknown"]["open"] == "1"
    assert kinds["households_affected"]["open"] == "1"
    assert kinds["notice_call_acknowledged"]["households"] == "1"
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM notice_outcome")
        assert cur.fetchone()[0] == 5
