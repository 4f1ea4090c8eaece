"""Progress summaries, queries and the CLI mirrors against real migrated lab data: the test corpus
is loaded, planned, seeded, copied with the real copier and one building verified; the figures
of `mailshift.progress` must equal what the ledger says."""

from __future__ import annotations

import csv
import io
import json
import os

import psycopg2
import pytest

from lab import corpus
from lab.connections import imap_uri
from lab.seed import seed_lab
from mailshift import cli
from mailshift.copy import copy_one as jobs
from mailshift.inventory.load import load_inventory
from mailshift.progress import html, queries
from mailshift.protocols.endpoint import parse_endpoint
from mailshift.rules import states
from mailshift.rules.proof import proof_states
from mailshift.store import progress as store
from mailshift.verify import verify_building
from support.mail import fresh_database

pytestmark = pytest.mark.integration
SERVERS = {"mailshift_src_a": "src-a", "mailshift_src_b": "src-b", "mailshift_dest": "dest"}


def build_lab_data(cfg, dsn: str, root) -> dict:
    """The test corpus migrated for real: planned (pilot wave of one building), every mailbox copied
    (prestage), the pilot building verified (report written), plus one exception, one waiver and
    notices recorded directly. Returns facts the tests compare the pages with."""
    inv = corpus.generate_inventory(42, "test")
    exports = corpus.write_exports(inv, root / "exports", cfg)
    conn = psycopg2.connect(dsn)
    load_inventory(conn, exports)
    assert cli.main(["--db", dsn, "plan", "--pilot-buildings", "1", "--start", "2027-01-11",
                     "--snapshot-dir", str(root / "snapshot"), "--brief"]) == 0
    seed_lab(cfg, inv)

    def resolve(conn_id):
        return parse_endpoint(imap_uri(cfg, SERVERS[conn_id]))

    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM mailbox ORDER BY id")
        mailbox_ids = [r[0] for r in cur.fetchall()]
    for mid in mailbox_ids:
        jobs.copy_one(conn, mid, "prestage", resolve=resolve)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM building WHERE wave_id = (SELECT min(wave_id) FROM building) ORDER BY id LIMIT 1")
        pilot = cur.fetchone()[0]
    reports = root / "reports"
    os.environ["MAILSHIFT_REPORTS_DIR"] = str(reports)
    verify_building(conn, pilot, resolve, reports=reports, dsn=dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT m.id, m.address, h.id, h.building_id FROM mailbox m JOIN household h"
                    " ON h.id = m.household_id ORDER BY m.id")
        mbs = cur.fetchall()
        other = next(m for m in mbs if m[3] != pilot)
        cur.execute("INSERT INTO exception (kind, severity, status, building_id, mailbox_id, summary)"
                    " VALUES ('copy_failed', 'blocking', 'open', %s, %s, 'ui test: source login refused')",
                    (other[3], other[0]))
        cur.execute("INSERT INTO notice (household_id, mailbox_id, campaign, kind, channel, status, sent_at)"
                    " VALUES (%s, %s, 'migration', 'email_round_1', 'email', 'sent', now() - interval '3 days')",
                    (other[2], other[0]))
    conn.close()
    return {"inventory": inv, "pilot": pilot, "mailboxes": mbs, "exception_mailbox": other,
            "reports": reports}


def ledger_truth(conn) -> dict:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE state = 1), coalesce(sum(size) FILTER (WHERE state = 1), 0),"
                    " count(*) FILTER (WHERE state IN (0, 2, 3)) FROM message")
        msgs, byts, unsettled = cur.fetchone()
        cur.execute("SELECT count(*) FROM mailbox")
        n_mb = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM exception WHERE status IN ('open', 'acknowledged')")
        exc = cur.fetchone()[0]
        cur.execute("SELECT id FROM mailbox")
        ids = [r[0] for r in cur.fetchall()]
    found = proof_states(conn, mailbox_ids=ids)      # the one definition of "proven"
    proven = sum(1 for s in found if s.ok)
    return {"messages": msgs, "bytes": int(byts), "unsettled": unsettled, "mailboxes": n_mb,
            "proven": proven, "waived": sum(1 for s in found if s.state == states.WAIVED),
            "unproven": n_mb - proven, "open_exceptions": exc}


@pytest.fixture(scope="module")
def lab_data(lab_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in __import__("lab.connections", fromlist=["x"])
                       .airflow_conn_env(lab_config).items()})
    try:
        with fresh_database(lab_config) as dsn:
            facts = build_lab_data(lab_config, dsn, root)
            yield dsn, facts
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_summaries_match_the_ledger(lab_data):
    dsn, facts = lab_data
    conn = psycopg2.connect(dsn)
    stats = store.refresh_changed(conn)
    assert stats["mailboxes"] == len(facts["mailboxes"])
    truth = ledger_truth(conn)
    ov = queries.overview(conn)
    t = ov["totals"]
    assert t["messages_copied"] == truth["messages"] and t["bytes_copied"] == truth["bytes"]
    assert t["messages_unsettled"] == truth["unsettled"]
    assert t["mailboxes"] == truth["mailboxes"] and t["unproven_mailboxes"] == truth["unproven"]
    assert t["mailboxes_proven"] == truth["proven"] > 0 and t["mailboxes_waived"] == truth["waived"]
    assert t["open_exceptions"] == truth["open_exceptions"] == 1
    assert t["buildings"] == len(facts["inventory"].buildings)
    assert sum(t["buildings_by_state"].values()) == t["buildings"]
    pilot_wave = next(w for w in ov["waves"] if w["buildings_by_state"]["proven"] or w["mailboxes_proven"])
    assert pilot_wave["series"], "the backfill gives every started wave a curve"
    assert ov["throughput"]["messages"] == truth["messages"] + truth["unsettled"] or ov["throughput"]["passes"] > 0
    # a second refresh with nothing changed re-reads only the overlap window (idempotent figures)
    store.refresh_changed(conn)
    assert queries.overview(conn)["totals"]["messages_copied"] == truth["messages"]
    # the full rebuild agrees with the incremental path
    store.rebuild_all(conn)
    assert queries.overview(conn)["totals"]["bytes_copied"] == truth["bytes"]
    page = html.overview_html(ov, "/mailshift", "operator")
    assert "chart-progress" in page and f"{truth['messages']:,}" in page
    conn.close()


def test_building_page_and_lookup(lab_data):
    dsn, facts = lab_data
    conn = psycopg2.connect(dsn)
    store.refresh_changed(conn)
    bp = queries.building_page(conn, facts["pilot"])
    assert bp["report"] and bp["report"].endswith("latest.html")
    assert bp["verify_runs"] and all(m["proof_state"] in states.PROOF_OK for m in bp["mailboxes"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM message m JOIN mailbox x ON x.id = m.mailbox_id JOIN household h"
                    " ON h.id = x.household_id WHERE h.building_id = %s AND m.state = 1", (facts["pilot"],))
        assert sum(m["n_copied"] for m in bp["mailboxes"]) == cur.fetchone()[0]
    mid, address, hid, bid = facts["exception_mailbox"]
    other = queries.building_page(conn, bid)
    assert [e["summary"] for e in other["exceptions"]] == ["ui test: source login refused"]
    res = queries.lookup(conn, address.upper())
    assert [h["household_id"] for h in res["households"]] == [hid]
    mb = next(m for m in res["households"][0]["mailboxes"] if m["address"] == address)
    assert mb["migrated"] and mb["proof_state"] == "not_proven" and mb["open_exceptions"] == 1
    assert res["households"][0]["notices"][0]["status"] == "sent"
    assert queries.lookup(conn, hid)["households"][0]["household_id"] == hid
    assert queries.lookup(conn, "nobody-here@")["households"] == []
    pilot_mb = next(m for m in facts["mailboxes"] if m[3] == facts["pilot"])
    res = queries.lookup(conn, pilot_mb[1])
    assert next(m for m in res["households"][0]["mailboxes"] if m["address"] == pilot_mb[1])["proof_state"] \
        in ("proven", "waived")
    conn.close()


def test_cli_lookup_report_status(lab_data, capsys):
    dsn, facts = lab_data
    mid, address, hid, bid = facts["exception_mailbox"]
    assert cli.main(["--db", dsn, "lookup", address, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["households"][0]["household_id"] == hid
    assert cli.main(["--db", dsn, "lookup", hid, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert address in {r["address"] for r in rows} and all(r["household_id"] == hid for r in rows)
    assert cli.main(["--db", dsn, "report", facts["pilot"], "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["proof_state"] in states.PROOF_OK for r in rows)
    assert set(rows[0]) == set(queries.REPORT_COLUMNS)
    assert cli.main(["--db", dsn, "report", facts["pilot"], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["building"]["id"] == facts["pilot"] and len(doc["mailboxes"]) == len(rows)
    assert cli.main(["--db", dsn, "report", "NO-SUCH-BUILDING"]) == 2     # bad input: unknown building
    capsys.readouterr()
    assert cli.main(["--db", dsn, "status", "--progress", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    conn = psycopg2.connect(dsn)
    assert doc["progress"]["totals"]["messages_copied"] == ledger_truth(conn)["messages"]
    conn.close()
    assert cli.main(["--db", dsn, "status", "--progress", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and "eta" in rows[0]


def test_waivers_refresh_the_proof_state(lab_data):
    """A waiver approved or revoked re-summarises its mailbox: the summaries show rules.proof's state."""
    from mailshift.store.waivers import create_waiver, revoke_waiver

    dsn, facts = lab_data
    mid, address, hid, bid = facts["exception_mailbox"]
    conn = psycopg2.connect(dsn)
    store.refresh_changed(conn)

    def summary():
        with conn, conn.cursor() as cur:
            cur.execute("SELECT proof_state FROM mailbox_progress WHERE mailbox_id = %s", (mid,))
            state = cur.fetchone()[0]
            cur.execute("SELECT mailboxes_proven, mailboxes_waived FROM building_progress WHERE building_id = %s",
                        (bid,))
            return state, *cur.fetchone()

    state, proven, waived = summary()
    assert state == states.NOT_PROVEN
    w = create_waiver(conn, mid, "tanaka", "ui test: customer gave the mailbox up", whole_mailbox=True,
                      requested_by="sato")
    assert store.refresh_changed(conn)["mailboxes"] >= 1
    assert summary() == (states.WAIVED, proven + 1, waived + 1)
    assert queries.building_page(conn, bid)["building"]["mailboxes_waived"] == waived + 1
    revoke_waiver(conn, w.id, "suzuki")
    store.refresh_changed(conn)
    assert summary() == (states.NOT_PROVEN, proven, waived)
    conn.close()


def test_counts_and_states_on_every_level(lab_data):
    """Refused / altered / waived / exception counts agree with the ledger at the overview, wave,
    domain, building and map levels; wave and domain states follow the buildings, up to cut over.
    Runs last: it marks one message altered and records an MX swap."""
    dsn, facts = lab_data
    mid, address, hid, bid = facts["exception_mailbox"]
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:      # the destination refused one message and altered another
        for state, detail in ((5, "header_bytes_replaced: ui test"), (2, "NO [OVERQUOTA] ui test")):
            cur.execute("UPDATE message SET state = %s, detail = %s WHERE (mailbox_id, folder_id, src_uid) ="
                        " (SELECT mailbox_id, folder_id, src_uid FROM message WHERE mailbox_id = %s AND state = 1"
                        "  ORDER BY folder_id, src_uid LIMIT 1)", (state, detail, mid))
        cur.execute("SELECT count(*) FILTER (WHERE state = 2), count(*) FILTER (WHERE state = 5) FROM message")
        refused, altered = cur.fetchone()
    store.refresh_changed(conn)
    store.refresh_mailboxes(conn, [mid])       # a ledger-only change: re-summarised on demand
    assert refused >= 1 and altered == 1
    ov = queries.overview(conn)
    t = ov["totals"]
    assert (t["messages_refused"], t["messages_altered"]) == (refused, altered)
    assert t["open_exceptions"] == 1 and t["mailboxes_waived"] == ledger_truth(conn)["waived"]
    assert sum(w["messages_refused"] for w in ov["waves"]) == refused
    assert sum(w["open_exceptions"] for w in ov["waves"]) == 1
    b = queries.building_page(conn, bid)["building"]
    assert b["messages_altered"] == 1 and b["open_exceptions"] == 1
    doms = queries.domains(conn)
    assert sum(d["messages_refused"] for d in doms) == refused and sum(d["messages_altered"] for d in doms) == 1
    # states: the pilot wave is proven (its one building verified), the other copied; a full
    # rebuild agrees with the incremental summaries
    by_wave = {w["wave"]: w for w in ov["waves"]}
    pilot_wave = next(w for w in ov["waves"] if w["buildings_by_state"][states.PROVEN])
    assert pilot_wave["status"] == states.PROVEN and pilot_wave["stored_status"] != states.PROVEN
    assert {w["status"] for k, w in by_wave.items() if k != pilot_wave["wave"]} <= {states.Progress.COPIED, states.Progress.COPYING}
    store.rebuild_all(conn)
    again = queries.overview(conn)["totals"]
    assert (again["messages_refused"], again["messages_altered"]) == (refused, altered)
    wp = queries.wave_page(conn, pilot_wave["wave"])
    assert [x["id"] for x in wp["buildings"]] == [facts["pilot"]] and wp["wave"]["status"] == states.PROVEN
    m = queries.building_map(conn)
    assert len(m["cells"]) == t["buildings"] and m["by_state"][states.PROVEN] >= 1
    assert {c["id"] for c in queries.building_map(conn, wave=pilot_wave["wave"])["cells"]} == {facts["pilot"]}
    system = b["source_system"]
    assert all(c["source_system"] == system for c in queries.building_map(conn, system=system)["cells"])
    # the MX swap of every domain: each building, wave and domain says cut over
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO dns_change (domain, kind, status, approved_by, approved_at, applied_at)"
                    " SELECT name, 'mx_swap', 'applied', 'ui test', now(), now() FROM domain")
    ov = queries.overview(conn)
    assert {w["status"] for w in ov["waves"] if w["buildings"]} == {states.Progress.CUT_OVER}
    assert {d["status"] for d in queries.domains(conn)} == {states.Progress.CUT_OVER}
    dp = queries.domain_page(conn, b["domain"])
    assert dp["dns_changes"][0]["kind"] == "mx_swap" and dp["domain"]["status"] == states.Progress.CUT_OVER
    assert queries.domain_page(conn, "no-such.example") is None and queries.wave_page(conn, 999) is None
    conn.close()
