"""One answer to "is this mailbox proven?": the same database asked through every caller.

The rule is `mailshift.rules.proof.decide`. Six callers show its answer to people: the gate, the
wave summary (and the Slack message built from it), the UI (summaries and pages), the CLI
(`lookup`, `report`) and the verification report. This test builds one domain whose mailboxes
are in every interesting state (proven; waived by a named person; ledger changed after the
proof; never verified; a copy still running; a failed proof with an unwaived finding) plus an open
exception, and checks that every caller gives the same answer for every mailbox.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import psycopg2
import pytest

from mailshift import cli
from mailshift.cutover.gate import EXCEPTION, evaluate_gate
from mailshift.notify import slack
from mailshift.planning.waves import wave_totals
from mailshift.progress import queries
from mailshift.rules import states
from mailshift.rules.proof import proof_states
from mailshift.store import progress as progress_store
from mailshift.store.exception_records import raise_exception
from mailshift.store.proofs import copied_totals
from mailshift.store.waivers import create_waiver
from mailshift.verify.report import render
from support.cutover import record_pass, record_proof
from support.mail import fresh_database

pytestmark = pytest.mark.integration

DOMAIN = "rule.example.jp"
WAVE = 1
EXPECTED = {
    "proven": states.PROVEN,
    "waived": states.WAIVED,
    "stale": states.NOT_PROVEN,
    "never-verified": states.NOT_PROVEN,
    "running": states.NOT_PROVEN,
    "finding": states.NOT_PROVEN,
}


def _inventory(db) -> dict[str, int]:
    """Two buildings of one wave; returns {local part: mailbox id}."""
    with db, db.cursor() as cur:
        cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, tls, max_connections)"
                    " VALUES ('legacy', 'dovecot', 'imap.legacy.example', 143, 'starttls', 4)")
        cur.execute("INSERT INTO domain (name) VALUES (%s)", (DOMAIN,))
        cur.execute("INSERT INTO wave (id, name) VALUES (%s, 'pilot')", (WAVE,))
        ids = {}
        for i, local in enumerate(EXPECTED):
            building = f"B{i % 2}"
            cur.execute("INSERT INTO building (id, name, domain, source_system, wave_id) VALUES (%s, %s, %s,"
                        " 'legacy', %s) ON CONFLICT DO NOTHING", (building, building, DOMAIN, WAVE))
            cur.execute("INSERT INTO household (id, building_id, contact_name) VALUES (%s, %s, %s)",
                        (f"H{i}", building, f"顧客 {i}"))
            cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login, protocol)"
                        " VALUES (%s, %s, %s, %s, 'imap') RETURNING id",
                        (f"H{i}", f"{local}@{DOMAIN}", local, f"{local}@{DOMAIN}"))
            ids[local] = cur.fetchone()[0]
    return ids


def _ledger_row(db, mailbox_id: int, pass_id: int) -> None:
    """One copied message, written after the proof: the ledger changed since it."""
    with db, db.cursor() as cur:
        cur.execute("INSERT INTO folder (mailbox_id, src_name, src_uidvalidity, dest_name) VALUES (%s, 'INBOX', 1,"
                    " 'INBOX') RETURNING id", (mailbox_id,))
        folder = cur.fetchone()[0]
        cur.execute("INSERT INTO message (mailbox_id, folder_id, src_uid, dest_uid, internal_date, pass_id, size,"
                    " state, src_sha256, dest_sha256, updated_at) VALUES (%s, %s, 1, 1, now(), %s, 10, 1, %s, %s,"
                    " now() + interval '1 minute')", (mailbox_id, folder, pass_id, b"\1" * 32, b"\1" * 32))


@pytest.fixture
def dsn(lab_config):
    with fresh_database(lab_config) as url:
        yield url


@pytest.fixture
def db(dsn):
    conn = psycopg2.connect(dsn)
    yield conn
    conn.close()


@pytest.fixture
def domain(db):
    ids = _inventory(db)
    for local, mid in ids.items():
        pass_id = record_pass(db, mid, status="running" if local == "running" else "finished")
        if local == "never-verified":
            continue
        record_proof(db, mid, verdict="failed" if local in ("waived", "finding") else "proven",
                     blocking_finding=local in ("waived", "finding"))
        if local == "stale":
            _ledger_row(db, mid, pass_id)
    create_waiver(db, ids["waived"], "Suzuki Ichiro", "customer deleted the message herself", whole_mailbox=True,
                  requested_by="support desk")
    raise_exception(db, "manual_hold", "support asked to hold the building", "hold-B0", building_id="B0")
    return ids


def test_every_caller_gives_the_rules_answer(dsn, db, domain, capsys, monkeypatch):
    monkeypatch.setenv("MAILSHIFT_DB_URL", dsn)
    by_address = {f"{k}@{DOMAIN}": v for k, v in EXPECTED.items()}
    ok = {a for a, s in by_address.items() if s in states.PROOF_OK}

    # the rule itself
    rule = {s.address: s.state for s in proof_states(db, domain=DOMAIN)}
    assert rule == by_address

    # 1. the gate: a mailbox it names (other than for the exception) is exactly a not-ok one
    v = evaluate_gate(db, DOMAIN, notice_check=lambda _c, _d: [])
    assert not v.passed
    named = {r.mailbox for r in v.reasons if r.kind != EXCEPTION}
    assert named == set(by_address) - ok
    assert [r.building for r in v.reasons if r.kind == EXCEPTION] == ["B0"]
    assert v.summary["mailboxes_ok"] == len(ok)

    # 2. the wave summary and the Slack message built from it
    t = wave_totals(db, WAVE)
    assert (t["mailboxes"], t["proven_mailboxes"], t["not_proven"]) == (len(by_address), len(ok), len(by_address) - len(ok))
    assert t["proven_buildings"] == 0          # both buildings hold a not-proven mailbox
    assert (t["messages"], t["bytes"]) == copied_totals(db, list(domain.values())) == (1, 10)
    msg = slack.wave_finished(WAVE, t["buildings"], t["proven_buildings"], t["mailboxes"], t["not_proven"],
                              t["messages"], t["bytes"], 60.0)
    assert f"{len(by_address) - len(ok)} not proven" in msg.text

    # 3. the UI: the maintained summaries and the building pages
    progress_store.refresh_changed(db, full=True)
    over = queries.overview(db)
    assert over["totals"]["mailboxes_proven"] == len(ok)
    page_states = {}
    for b in ("B0", "B1"):
        page = queries.building_page(db, b)
        page_states.update({m["address"]: m["proof_state"] for m in page["mailboxes"]})
    assert page_states == by_address

    # 4. the CLI: the support desk's lookup and the operator's building report
    for address, state in by_address.items():
        assert cli.main(["lookup", address, "--json"]) == 0
        found = json.loads(capsys.readouterr().out)
        shown = [m["proof_state"] for h in found["households"] for m in h["mailboxes"] if m["address"] == address]
        assert shown == [state], address
    reported = {}
    for b in ("B0", "B1"):
        assert cli.main(["report", b, "--json"]) == 0
        reported.update({m["address"]: m["proof_state"] for m in json.loads(capsys.readouterr().out)["mailboxes"]})
    assert reported == by_address

    # 5. the verification report of each building (for the run of one of its proofs)
    gx = SimpleNamespace(success=False, evaluated=0, failed=0, result={"suite_name": "mailshift_zero_loss",
                                                                        "results": []})
    buildings = {s.address: s.building_id for s in proof_states(db, domain=DOMAIN)}
    for b in ("B0", "B1"):
        run = next(s.verify_run_id for s in proof_states(db, building=b) if s.verify_run_id)
        html = render(db, b, run, gx, {})
        for address in (a for a, bb in buildings.items() if bb == b):
            row = html.split(f"<td>{address}</td>", 1)[1].split("</tr>", 1)[0]
            assert f">{by_address[address]}<" in row, (address, row)
