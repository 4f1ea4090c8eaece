"""Migrations against a real PostgreSQL: a fresh database per test, in the
cluster $MAILSHIFT_DB_URL points to (the lab's, or any other), dropped after."""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from mailshift import settings
from mailshift.rules.states import COPIED, FAILED, INTENT, REFUSED, Transform, flags_to_db
from mailshift.store import db, migrate

BASE_DSN = os.environ.get(settings.DB_URL)
pytestmark = pytest.mark.skipif(not BASE_DSN, reason=f"{settings.DB_URL} not set (source .lab/env)")


@pytest.fixture
def fresh_dsn():
    name = f"mailshift_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(BASE_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield psycopg2.extensions.make_dsn(BASE_DSN, dbname=name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def conn(fresh_dsn):
    migrate.upgrade(fresh_dsn)
    c = db.connect(fresh_dsn)
    yield c
    c.close()


def all_names():
    return [m.name for m in migrate.discover()]


def test_upgrade_empty_database(fresh_dsn):
    assert migrate.current(fresh_dsn) is None
    assert migrate.status(fresh_dsn) == {"applied": [], "pending": all_names()}
    applied = migrate.upgrade(fresh_dsn)
    assert applied == all_names() and applied[0] == "0001_init"
    assert migrate.current(fresh_dsn) == applied[-1]
    with db.connect(fresh_dsn) as c, c.cursor() as cur:
        cur.execute("SELECT version, name, checksum FROM schema_migration ORDER BY version")
        rows = cur.fetchall()
        assert [r[1] for r in rows] == applied
        first = migrate.discover()[0]
        assert rows[0] == (1, "0001_init", hashlib.sha256(first.path.read_bytes()).hexdigest())
        for table in ["source_system", "domain", "building", "household", "mailbox", "wave",
                      "pass", "folder", "message", "message_state", "verify_run",
                      "reconciliation", "reconciliation_finding", "proof", "waiver",
                      "exception", "notice", "dns_change"]:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            assert cur.fetchone()[0], table
        cur.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'message'::regclass")
        assert cur.fetchone()[0] == 64
        cur.execute("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'message'::regclass")
        assert cur.fetchone()[0] == "h"
    c.close()


def test_upgrade_twice_is_noop(fresh_dsn):
    assert migrate.upgrade(fresh_dsn) == all_names()
    assert migrate.upgrade(fresh_dsn) == []
    assert migrate.status(fresh_dsn)["pending"] == []


def test_concurrent_upgrade_applies_each_once(fresh_dsn):
    barrier = threading.Barrier(3)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(migrate.upgrade(fresh_dsn))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(results, key=len) == [[], [], all_names()]
    with db.connect(fresh_dsn) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migration")
        assert cur.fetchone()[0] == len(all_names())
    c.close()


def test_changed_file_is_refused(fresh_dsn, tmp_path):
    shutil.copytree(migrate.MIGRATIONS_DIR, tmp_path / "m")
    assert migrate.upgrade(fresh_dsn, directory=tmp_path / "m") == all_names()
    target = tmp_path / "m" / "0001_init.sql"
    target.write_text(target.read_text() + "\n-- sneaky edit\n")
    (tmp_path / "m" / "0099_more.sql").write_text("CREATE TABLE should_not_exist (x int);\n")
    with pytest.raises(migrate.ChecksumMismatch, match="0001_init.sql"):
        migrate.upgrade(fresh_dsn, directory=tmp_path / "m")
    with db.connect(fresh_dsn) as c, c.cursor() as cur:
        cur.execute("SELECT to_regclass('should_not_exist')")
        assert cur.fetchone()[0] is None
    c.close()


def test_tampered_checksum_in_db_is_refused(fresh_dsn):
    migrate.upgrade(fresh_dsn)
    with db.connect(fresh_dsn) as c, c.cursor() as cur:
        cur.execute("UPDATE schema_migration SET checksum = 'deadbeef' WHERE version = 1")
    c.close()
    with pytest.raises(migrate.ChecksumMismatch, match="0001_init.sql"):
        migrate.upgrade(fresh_dsn)
    with pytest.raises(migrate.ChecksumMismatch):
        migrate.status(fresh_dsn)
    assert migrate.main(["upgrade", "--dsn", fresh_dsn]) == 1


def test_failed_migration_rolls_back_alone(fresh_dsn, tmp_path):
    shutil.copytree(migrate.MIGRATIONS_DIR, tmp_path / "m")
    (tmp_path / "m" / "0900_bad.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n")
    with pytest.raises(migrate.MigrationError, match="0900_bad.sql"):
        migrate.upgrade(fresh_dsn, directory=tmp_path / "m")
    assert migrate.current(fresh_dsn) == all_names()[-1]
    with db.connect(fresh_dsn) as c, c.cursor() as cur:
        cur.execute("SELECT to_regclass('half_done')")
        assert cur.fetchone()[0] is None
    c.close()


def test_connect_without_dsn_is_clear(monkeypatch):
    monkeypatch.delenv(settings.DB_URL, raising=False)
    with pytest.raises(db.ConfigError, match=settings.DB_URL):
        db.connect()


# --- constraints ----------------------------------------------------------

DIGEST = hashlib.sha256(b"hello").digest()


def seed(cur):
    cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port, tls, "
                "max_connections) VALUES ('src-a', 'dovecot', 'h', 143, 110, 'starttls', 4)")
    cur.execute("INSERT INTO domain (name, mx_ttl) VALUES ('b1.example.jp', 3600)")
    cur.execute("INSERT INTO wave (id, name) VALUES (1, 'pilot')")
    cur.execute("INSERT INTO building (id, name, domain, source_system, wave_id) "
                "VALUES ('B1', 'Maison 1', 'b1.example.jp', 'src-a', 1)")
    cur.execute("INSERT INTO household (id, building_id) VALUES ('H1', 'B1')")
    cur.execute("INSERT INTO mailbox (household_id, address, source_login, protocol) VALUES "
                "('H1', 'taro@b1.example.jp', 'taro', 'imap'), "
                "('H1', 'hanako@b1.example.jp', 'hanako', 'pop3') RETURNING id")
    mb1, mb2 = [r[0] for r in cur.fetchall()]
    cur.execute("INSERT INTO folder (mailbox_id, src_name, src_uidvalidity) VALUES "
                "(%s, 'INBOX', 1234), (%s, 'INBOX', 0) RETURNING id", (mb1, mb2))
    f1, f2 = [r[0] for r in cur.fetchall()]
    cur.execute("INSERT INTO pass (mailbox_id, kind) VALUES (%s, 'prestage'), (%s, 'prestage') "
                "RETURNING id", (mb1, mb2))
    p1, p2 = [r[0] for r in cur.fetchall()]
    return mb1, mb2, f1, f2, p1, p2


def insert_message(cur, mailbox_id, folder_id, pass_id, uid, **over):
    sys_flags, keywords = flags_to_db([b"\\Seen", b"$Forwarded"])
    row = dict(mailbox_id=mailbox_id, folder_id=folder_id, src_uid=uid, size=1234,
               internal_date="2020-01-02T03:04:05+09:00", state=int(INTENT),
               sys_flags=sys_flags, keywords=keywords, src_sha256=DIGEST,
               transform=int(Transform.NONE), pass_id=pass_id)
    row.update(over)
    cols = ", ".join(row)
    cur.execute(f"INSERT INTO message ({cols}) VALUES ({', '.join(['%s'] * len(row))})",
                list(row.values()))


def expect_violation(conn, exc_type, sql_or_fn, *args, **kw):
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT sp")
        with pytest.raises(exc_type):
            if callable(sql_or_fn):
                sql_or_fn(cur, *args, **kw)
            else:
                cur.execute(sql_or_fn, args or None)
        cur.execute("ROLLBACK TO SAVEPOINT sp")


def test_message_constraints(conn):
    with conn.cursor() as cur:
        mb1, mb2, f1, f2, p1, p2 = seed(cur)
        insert_message(cur, mb1, f1, p1, 1)
        insert_message(cur, mb2, f2, p2, 1, transform=int(Transform.X_UIDL), pop3_uidl="00000001")
        cur.execute("SELECT tableoid::regclass::text, keywords, sys_flags FROM message "
                    "WHERE mailbox_id = %s", (mb1,))
        part, kw, sf = cur.fetchone()
        assert part.startswith("message_p") and kw == ["$Forwarded"] and sf == 1

    CV, FK, UV, NN = (psycopg2.errors.CheckViolation, psycopg2.errors.ForeignKeyViolation,
                      psycopg2.errors.UniqueViolation, psycopg2.errors.NotNullViolation)
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, state=7)
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, state=-1)
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, transform=2)
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, sys_flags=32)
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, src_sha256=b"short")
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, transform=1)          # no uidl
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, state=int(REFUSED))   # no detail
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, state=int(FAILED), detail="")
    expect_violation(conn, CV, insert_message, mb1, f1, p1, 2, keywords=[])
    expect_violation(conn, NN, insert_message, mb1, f1, p1, 2, src_sha256=None)
    expect_violation(conn, UV, insert_message, mb1, f1, p1, 1)                       # same PK
    expect_violation(conn, FK, insert_message, mb1, f2, p1, 2)   # folder of another mailbox
    expect_violation(conn, FK, insert_message, mb1, f1, p2, 2)   # pass of another mailbox
    with conn.cursor() as cur:
        insert_message(cur, mb1, f1, p1, 3, state=int(REFUSED), detail="NO [OVERQUOTA]")

        # intent -> copied: updated_at is stamped by the trigger, row leaves the partial index
        cur.execute("SELECT updated_at FROM message WHERE mailbox_id=%s AND src_uid=1", (mb1,))
        before = cur.fetchone()[0]
        conn.commit()
        cur.execute("UPDATE message SET state=%s, dest_uid=7, dest_sha256=src_sha256 "
                    "WHERE mailbox_id=%s AND folder_id=%s AND src_uid=1", (int(COPIED), mb1, f1))
        cur.execute("SELECT updated_at > %s FROM message WHERE mailbox_id=%s AND src_uid=1",
                    (before, mb1))
        assert cur.fetchone()[0]
        cur.execute("SELECT state, count(*) FROM message WHERE mailbox_id=%s AND state <> 1 "
                    "GROUP BY state", (mb1,))
        assert cur.fetchall() == [(2, 1)]
        assert refresh(cur, mb1) == 1
        cur.execute("SELECT n_copied, n_refused, n_intent, max_src_uid FROM folder_progress "
                    "WHERE folder_id=%s", (f1,))
        assert cur.fetchone() == (1, 1, 0, 3)
    conn.commit()


def refresh(cur, mailbox_id):
    cur.execute("SELECT refresh_folder_progress(%s)", (mailbox_id,))
    return cur.fetchone()[0]


def test_inventory_and_proof_constraints(conn):
    CV = psycopg2.errors.CheckViolation
    with conn.cursor() as cur:
        mb1, mb2, f1, f2, p1, p2 = seed(cur)
        insert_message(cur, mb1, f1, p1, 1)
    expect_violation(conn, CV, "INSERT INTO mailbox (household_id, address, source_login, protocol) "
                     "VALUES ('H1', 'x@b1.example.jp', 'x', 'smtp')")
    expect_violation(conn, CV, "INSERT INTO pass (mailbox_id, kind) VALUES (%s, 'sideways')", mb1)
    expect_violation(conn, CV, "INSERT INTO source_system (id, kind, tls) VALUES ('s', 'k', 'ssl')")
    expect_violation(conn, CV, "INSERT INTO folder (mailbox_id, src_name, src_uidvalidity, state) "
                     "VALUES (%s, 'X', 1, 'unmappable')", mb1)                  # no detail
    expect_violation(conn, psycopg2.errors.UniqueViolation,
                     "INSERT INTO folder (mailbox_id, src_name, src_uidvalidity) "
                     "VALUES (%s, 'INBOX', 1234)", mb1)

    waiver = ("INSERT INTO waiver (mailbox_id, folder_id, src_uid, scope, reason, approved_by, "
              "requested_by) VALUES (%s, %s, %s, %s, %s, %s, %s)")
    expect_violation(conn, CV, waiver, mb1, f1, 1, "message", "", "suzuki", None)
    expect_violation(conn, CV, waiver, mb1, f1, 1, "message", "   ", "suzuki", None)
    expect_violation(conn, CV, waiver, mb1, f1, 1, "message", "virus", "", None)
    expect_violation(conn, psycopg2.errors.NotNullViolation, waiver, mb1, f1, 1, "message",
                     "virus", None, None)
    expect_violation(conn, CV, waiver, mb1, f1, 1, "message", "virus", "suzuki", "suzuki")
    expect_violation(conn, CV, waiver, mb1, None, None, "message", "virus", "suzuki", None)
    expect_violation(conn, psycopg2.errors.ForeignKeyViolation, waiver, mb1, f1, 999,
                     "message", "virus", "suzuki", None)                        # no such message
    with conn.cursor() as cur:
        cur.execute(waiver, (mb1, f1, 1, "message", "virus-infected, customer agreed by phone",
                             "suzuki", "tanaka"))
        cur.execute("INSERT INTO verify_run (scope, scope_id) VALUES ('mailbox', %s) RETURNING id",
                    (str(mb1),))
        run = cur.fetchone()[0]
    proof = ("INSERT INTO proof (mailbox_id, verify_run_id, kind, verdict, src_messages, "
             "dest_messages, matched, waived) VALUES (%s, %s, 'final', %s, %s, %s, %s, %s)")
    expect_violation(conn, CV, proof, mb1, run, "proven", 10, 9, 9, 0)          # not all matched
    expect_violation(conn, CV, proof, mb1, run, "maybe", 1, 1, 1, 0)
    expect_violation(conn, CV, "INSERT INTO exception (kind, summary, status) "
                     "VALUES ('k', 's', 'resolved')")                           # no resolver
    expect_violation(conn, CV, "INSERT INTO dns_change (domain, kind, status, applied_at) "
                     "VALUES ('b1.example.jp', 'mx_swap', 'applied', now())")   # not approved
    expect_violation(conn, CV, "INSERT INTO notice (household_id, campaign, kind, channel, status) "
                     "VALUES ('H1', 'c1', 'cutover_advance', 'postal', 'sent')")  # no sent_at
    with conn.cursor() as cur:
        cur.execute(proof, (mb1, run, "proven", 10, 10, 10, 0))
        cur.execute(proof, (mb1, run, "proven_with_waivers", 10, 9, 9, 1))
        cur.execute("INSERT INTO dns_change (domain, kind, status, approved_by, approved_at, "
                    "applied_at) VALUES ('b1.example.jp', 'mx_swap', 'applied', 'sato', now(), now())")
        cur.execute("INSERT INTO notice (household_id, campaign, kind, channel) "
                    "VALUES ('H1', 'c1', 'cutover_advance', 'postal')")
    expect_violation(conn, psycopg2.errors.UniqueViolation,
                     "INSERT INTO notice (household_id, campaign, kind, channel) "
                     "VALUES ('H1', 'c1', 'cutover_advance', 'postal')")
    with conn.cursor() as cur:
        cur.execute("SELECT domain, building_id FROM mailbox_scope WHERE mailbox_id=%s", (mb1,))
        assert cur.fetchone() == ("b1.example.jp", "B1")
    conn.commit()
