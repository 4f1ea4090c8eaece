"""The gate from the summaries (index probes + `mailbox_ledger`, migration 0009) gives exactly the
verdict, the reasons and the summary of the full evaluation over every ledger row, on one domain
holding every interesting case: proven; a finding waived by id; a whole-mailbox waiver; a
stale ledger (changed after the proof); never verified; a copy running; an unwaived finding; an
interrupted copy (intent row); an open exception. And a `mailbox_ledger` row that is not fresh
(its watermark differs from the ledger's) is never trusted: the mailbox is counted live.

The latest pass and proof of each mailbox are kept by triggers (`mailbox_latest`, migration 0012):
every kind of write to `pass` and `proof` (a newer pass after the proof, a pass that fails, a pass
recorded with an older start, a newer proof, a proof deleted or moved back in time, TRUNCATE, two
writers at once) leaves them equal to what probing the tables finds. A domain read in chunks over
several connections gives the same answer as one read."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from mailshift.cutover.gate import evaluate_gate
from mailshift.store import proofs
from mailshift.store.exception_records import raise_exception
from mailshift.store.ledger import CopyStore
from mailshift.store.waivers import create_waiver
from support.cutover import record_pass, record_proof
from support.mail import fresh_database

pytestmark = pytest.mark.integration

DOMAIN = "summary.example.jp"
CASES = ("proven", "finding-waived", "whole-waived", "stale", "never-verified", "running", "finding", "intent")


@pytest.fixture
def dsn(lab_config):
    with fresh_database(lab_config) as url:
        yield url


@pytest.fixture
def db(dsn):
    conn = psycopg2.connect(dsn)
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


_PROBED = """
SELECT m.id, lx.id, lx.kind, lx.status, lx.started_at, lx.detail ->> 'error',
       lp.id, lp.verify_run_id, lp.kind, lp.verdict, lp.ledger_as_of, lp.proven_at, lp.src_messages
FROM mailbox m
LEFT JOIN LATERAL (SELECT * FROM pass x WHERE x.mailbox_id = m.id ORDER BY x.started_at DESC, x.id DESC LIMIT 1) lx ON true
LEFT JOIN LATERAL (SELECT * FROM proof p WHERE p.mailbox_id = m.id ORDER BY p.proven_at DESC, p.id DESC LIMIT 1) lp ON true
ORDER BY 1"""
_KEPT = """
SELECT m.id, k.pass_id, k.pass_kind, k.pass_status, k.pass_started, k.pass_error,
       k.proof_id, k.verify_run_id, k.proof_kind, k.verdict, k.ledger_as_of, k.proven_at, k.src_messages
FROM mailbox m LEFT JOIN mailbox_latest k ON k.mailbox_id = m.id ORDER BY 1"""


def _kept_is_probed(db) -> list[tuple]:
    """mailbox_latest equals the latest pass and proof probed in their tables, for every mailbox."""
    with db, db.cursor() as cur:
        cur.execute(_PROBED)
        probed = cur.fetchall()
        cur.execute(_KEPT)
        assert cur.fetchall() == probed
    return probed


def _kinds(verdict, address: str) -> set[str]:
    return {r.kind for r in verdict.reasons if r.mailbox == address}


def test_the_kept_latest_pass_and_proof_follow_every_write(db, domain):
    _kept_is_probed(db)
    proven, fixed, finding = (f"{x}@{DOMAIN}" for x in ("proven", "never-verified", "finding"))
    store = CopyStore(db)
    # a newer pass after the proof: running, then failed (with its error)
    pid = store.open_pass(domain["proven"], "delta")
    _kept_is_probed(db)
    assert _kinds(_same(db)[0], proven) == {"pass_running"}
    store.finish_pass(pid, "failed", {"error": "connection reset by peer"})
    _kept_is_probed(db)
    summary, _ = _same(db)
    assert _kinds(summary, proven) == {"pass_failed"}
    assert any("connection reset by peer" in r.detail for r in summary.reasons if r.mailbox == proven)
    # a pass recorded with an older start does not become the latest; a finished newer one does
    with db, db.cursor() as cur:
        cur.execute("INSERT INTO pass (mailbox_id, kind, status, started_at, finished_at)"
                    " VALUES (%s, 'prestage', 'finished', now() - interval '1 day', now() - interval '1 day')",
                    (domain["proven"],))
    assert _kinds(_same(db)[0], proven) == {"pass_failed"}
    store.finish_pass(store.open_pass(domain["proven"], "delta"), "finished", {})
    assert _kinds(_same(db)[0], proven) == set()
    # a first proof, then deleted again
    new_proof = record_proof(db, domain["never-verified"])
    _kept_is_probed(db)
    assert _kinds(_same(db)[0], fixed) == set()
    with db, db.cursor() as cur:
        cur.execute("DELETE FROM proof WHERE id = %s", (new_proof,))
    _kept_is_probed(db)
    assert _kinds(_same(db)[0], fixed) == {"never_verified"}
    # a newer proof replaces the failed one; moved back before it, the failed one is the latest again
    newer = record_proof(db, domain["finding"])
    assert _kinds(_same(db)[0], finding) == set()
    with db, db.cursor() as cur:
        cur.execute("UPDATE proof SET proven_at = proven_at - interval '1 day' WHERE id = %s", (newer,))
    _kept_is_probed(db)
    assert _kinds(_same(db)[0], finding) == {"unwaived_findings"}
    # every proof gone at once
    with db, db.cursor() as cur:
        cur.execute("TRUNCATE proof CASCADE")
    assert all(row[6] is None for row in _kept_is_probed(db))
    assert {r.kind for r in _same(db)[0].reasons} >= {"never_verified"}


def test_two_writers_at_once_keep_the_newest_pass(dsn, db, domain):
    """Concurrent transactions: the kept pass is a maximum, whatever order they lock and commit in."""
    mid = domain["proven"]
    first, second = psycopg2.connect(dsn), psycopg2.connect(dsn)
    try:
        c1, c2 = first.cursor(), second.cursor()
        c1.execute("SELECT now()")                    # transaction 1 starts first: the older started_at
        time.sleep(0.01)
        c1.execute("INSERT INTO pass (mailbox_id, kind) VALUES (%s, 'delta') RETURNING id", (mid,))
        older = c1.fetchone()[0]
        # transaction 2 (newer start) waits for 1's lock on the kept row, then re-checks its newer pass
        t = threading.Thread(target=c2.execute, args=("INSERT INTO pass (mailbox_id, kind) VALUES (%s, 'drain')",
                                                      (mid,)))
        t.start()
        time.sleep(0.3)
        first.commit()
        t.join(10)
        second.commit()
        probed = _kept_is_probed(db)
        assert [r[2] for r in probed if r[0] == mid] == ["drain"]
        # the other order: the older-started transaction writes last and must not win
        c1.execute("SELECT now()")
        time.sleep(0.01)
        c2.execute("INSERT INTO pass (mailbox_id, kind) VALUES (%s, 'final') RETURNING id", (mid,))
        second.commit()
        c1.execute("INSERT INTO pass (mailbox_id, kind) VALUES (%s, 'delta')", (mid,))
        first.commit()
        assert [r[2] for r in _kept_is_probed(db) if r[0] == mid] == ["final"]
        assert older not in [r[1] for r in _kept_is_probed(db)]
    finally:
        first.close()
        second.close()


def test_a_domain_read_in_chunks_over_several_connections_gives_the_same_answer(dsn, db, domain, monkeypatch,
                                                                                lab_config):
    whole, _ = _same(db)
    monkeypatch.setattr(proofs, "CHUNK_HOUSEHOLDS", 1)    # one chunk per building: S0, S1, S2
    chunks, siblings = [], []
    admin = psycopg2.connect(lab_config.pg_admin_dsn)
    try:
        for chunk in proofs.facts_in_chunks(db, domain=DOMAIN):
            chunks.append({f.building_id for f in chunk})
            with admin, admin.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                            " AND application_name = 'mailshift-facts'", (dsn.rsplit("/", 1)[1],))
                siblings.append(cur.fetchone()[0])
    finally:
        admin.close()
    assert chunks == [{"S0"}, {"S1"}, {"S2"}]
    assert siblings[0] == 2                               # read over three connections at once
    chunked, _ = _same(db)
    assert (chunked.passed, chunked.reasons, chunked.summary) == (whole.passed, whole.reasons, whole.summary)
    with psycopg2.connect(dsn) as probe, probe.cursor() as cur:   # the sibling connections were closed
        for _ in range(50):
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mailshift-facts'")
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the sibling connections of the chunked read are still open")
