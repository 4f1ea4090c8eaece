"""The gate from the summaries (index probes + `mailbox_ledger`, migration 0009) gives exactly the
verdict, the reasons and the summary of the full evaluation over every ledger row, on one domain
holding every interesting case: proven; a finding waived by id; a whole-mailbox waiver; a
stale ledger (changed after the proof); never verified; a copy running; an unwaived finding; an
interrupted copy (intent row); an open exception. And a `mailbox_ledger` row that is not fresh
(its watermark differs from the ledger's) is never trusted: the mailbox is counted live."""

from __future__ import annotations

import psycopg2
import pytest

from mailshift.cutover.gate import evaluate_gate
from mailshift.store.exception_records import raise_exception
from mailshift.store.waivers import create_waiver
from support.cutover import record_pass, record_proof
from support.mail import fresh_database

pytestmark = pytest.mark.integration

DOMAIN = "summary.example.jp"
CASES = ("proven", "finding-waived", "whole-waived", "stale", "never-verified", "running", "finding", "intent")


@pytest.fixture
def db(lab_config):
    with fresh_database(lab_config) as url:
        conn = psycopg2.connect(url)
        yield conn
        conn.close()


def _inventory(db) -> dict[str, int]:
    with db, db.cursor() as cur:
        cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, tls, max_connections)"
                    " VALUES ('legacy', 'dovecot', 'imap.legacy.example', 143, 'starttls', 4)")
        cur.execute("INSERT INTO domain (name) VALUES (%s)", (DOMAIN,))
        ids = {}
        for i, local in enumerate(CASES):
            building = f"S{i % 3}"
            cur.execute("INSERT INTO building (id, name, domain, source_system) VALUES (%s, %s, %s, 'legacy')"
                        " ON CONFLICT DO NOTHING", (building, building, DOMAIN))
            cur.execute("INSERT INTO household (id, building_id) VALUES (%s, %s)", (f"SH{i}", building))
            cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login, protocol)"
                        " VALUES (%s, %s, %s, %s, 'imap') RETURNING id",
                        (f"SH{i}", f"{local}@{DOMAIN}", local, f"{local}@{DOMAIN}"))
            ids[local] = cur.fetchone()[0]
    return ids


def _ledger(db, mailbox_id: int, pass_id: int, n: int, *, state: int = 1, later: bool = False) -> None:
    """`n` ledger rows in `state`; `later`: written after the proof (the ledger changed since)."""
    with db, db.cursor() as cur:
        cur.execute("INSERT INTO folder (mailbox_id, src_name, src_uidvalidity, dest_name) VALUES (%s, 'INBOX', 1,"
                    " 'INBOX') ON CONFLICT DO NOTHING RETURNING id", (mailbox_id,))
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT id FROM folder WHERE mailbox_id = %s", (mailbox_id,))
            row = cur.fetchone()
        cur.execute("SELECT coalesce(max(src_uid), 0) FROM message WHERE mailbox_id = %s", (mailbox_id,))
        base = cur.fetchone()[0]
        cur.execute("INSERT INTO message (mailbox_id, folder_id, src_uid, dest_uid, internal_date, pass_id, size,"
                    " state, src_sha256, dest_sha256, updated_at, detail)"
                    " SELECT %s, %s, %s + g, CASE WHEN %s = 1 THEN %s + g END, now(), %s, 100 * g, %s, %s,"
                    " CASE WHEN %s = 1 THEN %s::bytea END, now() - interval '1 hour' + %s * interval '2 hours', NULL"
                    " FROM generate_series(1, %s) g",
                    (mailbox_id, row[0], base, state, base, pass_id, state, b"\1" * 32, state, b"\1" * 32,
                     1 if later else 0, n))


@pytest.fixture
def domain(db):
    ids = _inventory(db)
    for local, mid in ids.items():
        pass_id = record_pass(db, mid, status="running" if local == "running" else "finished")
        _ledger(db, mid, pass_id, 3)
        if local == "never-verified":
            continue
        blocking = local in ("finding-waived", "whole-waived", "finding")
        # the waivers come after the verification that found something (verdict failed)
        record_proof(db, mid, verdict="failed" if blocking else "proven", blocking_finding=blocking)
        if local == "stale":
            _ledger(db, mid, pass_id, 2, later=True)
        if local == "intent":
            _ledger(db, mid, pass_id, 1, state=0, later=False)
    create_waiver(db, ids["whole-waived"], "Suzuki Ichiro", "customer deleted the message herself",
                  whole_mailbox=True, requested_by="support desk")
    with db, db.cursor() as cur:
        cur.execute("UPDATE reconciliation_finding f SET folder_id = d.id, src_uid = 1 FROM folder d"
                    " WHERE f.mailbox_id = %s AND d.mailbox_id = f.mailbox_id RETURNING f.id", (ids["finding-waived"],))
        finding = cur.fetchone()[0]
    create_waiver(db, ids["finding-waived"], "Tanaka Jiro", "the message was spam", finding_id=finding,
                  requested_by="support desk")
    raise_exception(db, "manual_hold", "support asked to hold the building", "hold-S1", building_id="S1")
    return ids


def _same(db, **kw):
    summary = evaluate_gate(db, DOMAIN, notice_check=lambda _c, _d: [], **kw)
    full = evaluate_gate(db, DOMAIN, notice_check=lambda _c, _d: [], live=True, **kw)
    assert summary.passed == full.passed
    assert summary.reasons == full.reasons
    strip = {"mailboxes_counted_live"}
    assert {k: v for k, v in summary.summary.items() if k not in strip} == \
           {k: v for k, v in full.summary.items() if k not in strip}
    return summary, full


def test_summary_gate_equals_full_evaluation(db, domain):
    summary, full = _same(db)
    assert not summary.passed
    kinds = {(r.mailbox or r.building, r.kind) for r in summary.reasons}
    assert kinds == {
        (f"stale@{DOMAIN}", "ledger_changed_since_proof"), (f"never-verified@{DOMAIN}", "never_verified"),
        (f"running@{DOMAIN}", "pass_running"), (f"finding@{DOMAIN}", "unwaived_findings"),
        (f"intent@{DOMAIN}", "copy_interrupted"), ("S1", "open_exception")}
    assert summary.summary["mailboxes_ok"] == 3            # proven, finding-waived, whole-waived
    assert summary.summary["messages"] == 3 * len(CASES) + 2
    assert summary.summary["mailboxes_counted_live"] == 0  # every mailbox_ledger row is fresh
    assert full.summary["mailboxes_counted_live"] == len(CASES)
    # the final proof's variant (require_kind=final) agrees too
    _same(db, proof_kind="final")


def test_a_summary_row_that_is_not_fresh_is_not_trusted(db, domain):
    with db, db.cursor() as cur:   # a summary row gone wrong (e.g. written by hand): counts and watermark off
        cur.execute("UPDATE mailbox_ledger SET n_copied = n_copied + 1000, ledger_now = ledger_now - interval '1 day'"
                    " WHERE mailbox_id = %s", (domain["proven"],))
        cur.execute("DELETE FROM mailbox_ledger WHERE mailbox_id = %s", (domain["finding"],))
    summary, _full = _same(db)
    assert summary.summary["mailboxes_counted_live"] == 2


def test_the_triggers_keep_the_summary_exact(db, domain):
    """INSERT, UPDATE (intent -> copied) and DELETE statements keep mailbox_ledger equal to the ledger."""
    mid = domain["intent"]
    with db, db.cursor() as cur:
        cur.execute("UPDATE message SET state = 1, dest_uid = src_uid, dest_sha256 = src_sha256"
                    " WHERE mailbox_id = %s AND state = 0", (mid,))
        cur.execute("DELETE FROM message WHERE mailbox_id = %s AND src_uid = 1", (domain["proven"],))
        cur.execute("SELECT ml.mailbox_id, ml.n_rows, ml.n_intent, ml.n_copied, ml.bytes_copied"
                    " FROM mailbox_ledger ml ORDER BY 1")
        marks = cur.fetchall()
        cur.execute("SELECT mailbox_id, count(*), count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 1),"
                    " coalesce(sum(size) FILTER (WHERE state = 1), 0) FROM message GROUP BY 1 ORDER BY 1")
        assert marks == cur.fetchall()
    _same(db)
