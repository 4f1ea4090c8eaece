"""Issue #15, renames that can never point at another customer: a mailbox loaded between two
audit runs takes the address a rename proposed; the next run (whole inventory or one building)
does not crash, moves the proposal, keeps the history and plans the household's letter again."""
import json

import psycopg2

from mailshift import cli
from mailshift.customers import notices
from support.mail import fresh_database


def _cli(capsys, dsn, *argv):
    rc = cli.main(["--db", dsn, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _add(conn, hid, building, address, dest_login=None):
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO household (id, building_id) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING", (hid, building))
        cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login,"
                    " protocol) VALUES (%s, %s, %s, %s, 'imap') RETURNING id",
                    (hid, address, address.split("@")[0], dest_login or address))
        return cur.fetchone()[0]


def _renames(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT mailbox_id, new_address, status, previous_addresses"
                    " FROM address_rename ORDER BY 1")
        return {r[0]: r[1:] for r in cur.fetchall()}


def test_colliding_mailbox_loaded_between_runs(lab_config, capsys, tmp_path):
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, tls,"
                        " max_connections, airflow_conn_id) VALUES ('s', 'd', 'h', 143, 'none',"
                        " 1, 'c')")
            cur.execute("INSERT INTO domain (name) VALUES ('x.example')")
            for b in ("B1", "B2"):
                cur.execute("INSERT INTO building (id, domain, source_system, spec) VALUES"
                            " (%s, 'x.example', 's', %s)",
                            (b, json.dumps({"notice_policy": {"call": False}})))
        m1 = _add(conn, "H1", "B1", "a..b@x.example")
        # a mailbox whose destination login is "c.d": planned, so no proposal may take it
        _add(conn, "H9", "B2", "zz@x.example", dest_login="c.d@x.example")
        m3 = _add(conn, "H3", "B1", "c..d@x.example")
        rc, out, err = _cli(capsys, dsn, "audit", "addresses")
        assert rc == 0, err
        r = _renames(conn)
        assert r[m1] == ("a.b@x.example", "proposed", [])
        assert r[m3][0] == "c.d-2@x.example"

        # the letter naming a.b@x.example went out
        rows = notices.export_list(conn, "letter", building="B1")
        assert "changes to a.b@x.example" in next(x for x in rows if x["household_id"] == "H1")["changes"]
        res = notices.record_outcomes(conn, "household_id,channel,outcome\nH1,letter,sent\n",
                                      recorded_by="post room")
        assert res == {"recorded": 1}

        # a new mailbox is loaded with exactly that address (another customer, building B2)
        _add(conn, "H5", "B2", "a.b@x.example")
        for argv in (("audit", "addresses", "--building", "B1"), ("audit", "addresses")):
            rc, out, err = _cli(capsys, dsn, *argv)
            assert rc == 0, (argv, err)        # never UniqueViolation
        st = json.loads(out)
        r = _renames(conn)
        assert r[m1] == ("a.b-2@x.example", "proposed", ["a.b@x.example"])
        with conn.cursor() as cur:
            cur.execute("SELECT stats FROM audit_run ORDER BY id")
            first_rerun = cur.fetchall()[1][0]
        assert first_rerun["renames_changed"] == [
            {"mailbox_id": m1, "was": "a.b@x.example", "now": "a.b-2@x.example"}]
        assert first_rerun["letters_reissued"] == 1
        assert st["renames_changed"] == [] and st["letters_reissued"] == 0   # stable afterwards

        # the letter is due again and names the new address; the gate waits for it
        rows = notices.export_list(conn, "letter", building="B1")
        h1 = next(x for x in rows if x["household_id"] == "H1")
        assert h1["status"] == "planned" and "changes to a.b-2@x.example" in h1["changes"]
        assert "a.b@x.example." not in h1["changes"]
        reasons = [x.detail for x in notices.notice_gate_check(conn, "x.example")]
        assert any(d.startswith("household H1 ") and "no letter" not in d and "letter not done"
                   in d for d in reasons)
        # no target is any other mailbox's address, destination login or target
        with conn.cursor() as cur:
            cur.execute("""SELECT r.mailbox_id, r.new_address FROM address_rename r JOIN mailbox m
                           ON lower(m.address) = lower(r.new_address)
                             OR lower(m.dest_login) = lower(r.new_address)
                           WHERE m.id <> r.mailbox_id AND r.status <> 'cancelled'""")
            assert cur.fetchall() == []
        conn.close()
