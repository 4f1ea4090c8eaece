"""Loading exports into a fresh, migrated database (CREATE DATABASE per test, dropped after)."""
from __future__ import annotations

import shutil
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from lab import corpus
from mailshift.inventory import InventoryError, load_inventory
from support.mail import fresh_database

pytestmark = pytest.mark.integration
FIX = Path(__file__).parents[1] / "unit" / "fixtures" / "inventory"
TABLES = ("source_system", "domain", "building", "household", "mailbox")


@pytest.fixture
def dsn(lab_config):
    with fresh_database(lab_config) as url:
        yield url


@pytest.fixture
def conn(dsn):
    c = psycopg2.connect(dsn)
    yield c
    c.close()


def counts(conn) -> dict[str, int]:
    with conn.cursor() as cur:
        out = {}
        for t in TABLES:
            cur.execute(f"SELECT count(*) FROM {t}")
            out[t] = cur.fetchone()[0]
    conn.rollback()
    return out


def snapshot(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT id, address, source_login, dest_login, protocol, quota_bytes, household_id, "
                    "updated_at FROM mailbox ORDER BY id")
        mb = cur.fetchall()
        cur.execute("SELECT id, name, domain, source_system, spec, pinned_wave, updated_at FROM building ORDER BY id")
        b = cur.fetchall()
    conn.rollback()
    return mb, b


def test_load_demo_exports_and_reload_is_noop(conn, tmp_path):
    inv = corpus.generate_inventory(42, "demo")
    d = corpus.write_exports(inv, tmp_path / "exp")
    rep = load_inventory(conn, d)
    assert counts(conn) == {"source_system": 2, "domain": 2, "building": len(inv.buildings),
                            "household": len(inv.households), "mailbox": len(inv.mailboxes)}
    assert rep.counts["mailbox"]["inserted"] == len(inv.mailboxes)
    before = snapshot(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT protocol, count(*) FROM mailbox GROUP BY 1 ORDER BY 1")
        assert dict(cur.fetchall()) == {
            "imap": sum(m.protocol == "imap" for m in inv.mailboxes),
            "pop3": sum(m.protocol == "pop3" for m in inv.mailboxes)}
        cur.execute("SELECT count(*) FROM mailbox WHERE dest_login <> lower(address)")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT spec FROM building WHERE id = %s", (inv.buildings[0].id,))
        spec = cur.fetchone()[0]
        assert spec["folder_map"] == {"Junk": "Spam"} and spec["source_system"] == "src-a"
        assert spec["size_limit_bytes"] == 25 * 1024 * 1024  # default merged in
    conn.rollback()

    rep2 = load_inventory(conn, d)  # same exports again: nothing changes, ids kept
    assert rep2.changed == 0, rep2
    assert snapshot(conn) == before

    # a changed quota updates exactly one row and keeps the mailbox id
    csv = d / "src-a.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    row = lines[1].split(",")
    row[-1] = "12345"
    lines[1] = ",".join(row)
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rep3 = load_inventory(conn, d)
    assert rep3.counts["mailbox"] == {"inserted": 0, "updated": 1, "unchanged": len(inv.mailboxes) - 1}
    after = snapshot(conn)
    assert [r[0] for r in after[0]] == [r[0] for r in before[0]]


def test_bad_export_loads_nothing(conn, tmp_path):
    with pytest.raises(InventoryError) as ei:
        load_inventory(conn, FIX / "invalid" / "duplicate_address")
    assert "src-a.csv:3: address: duplicate address" in str(ei.value)
    assert counts(conn) == dict.fromkeys(TABLES, 0)

    # a valid load, then a bad one: the first one's rows stay exactly as they were
    load_inventory(conn, FIX / "valid")
    before = snapshot(conn)
    bad = tmp_path / "bad"
    shutil.copytree(FIX / "invalid" / "non_numeric_quota", bad)
    with pytest.raises(InventoryError):
        load_inventory(conn, bad)
    assert snapshot(conn) == before


def test_load_accepts_dsn_and_valid_fixture(conn, dsn):
    rep = load_inventory(dsn, FIX / "valid")
    assert rep.counts["mailbox"]["inserted"] == 6
    assert counts(conn)["household"] == 4


def test_mailbox_lookups_after_a_load(conn):
    """store.inventory's reads: by address (any case) or id, a building's mailboxes (view mailbox_scope)."""
    from mailshift.copy.copy_one import UnknownMailbox, mailbox_context
    from mailshift.store import inventory as inventory_store

    load_inventory(conn, FIX / "valid")
    ctx = mailbox_context(conn, "SAITO.KENTA@lab.mailshift.test")
    assert ctx.mailbox.address == "Saito.kenta@lab.mailshift.test"
    assert ctx.mailbox.dest_login == "saito.kenta@lab.mailshift.test"
    assert ctx.building_id == "B10001" and ctx.source_system == "src-a"
    assert ctx.spec["folder_map"] == {"Junk": "Spam", "仕事/請求書": "Invoices"}
    assert mailbox_context(conn, ctx.mailbox.id) == ctx == mailbox_context(conn, str(ctx.mailbox.id))
    with pytest.raises(UnknownMailbox, match="nobody@lab.mailshift.test"):
        mailbox_context(conn, "nobody@lab.mailshift.test")
    ids = inventory_store.building_mailbox_ids(conn, "B10001")
    assert ctx.mailbox.id in ids and ids == sorted(ids)
    assert {mailbox_context(conn, i).building_id for i in ids} == {"B10001"}
    assert len(ids) + len(inventory_store.building_mailbox_ids(conn, "B10008")) == 6
    assert inventory_store.building_mailbox_ids(conn, "B99999") == []
    assert inventory_store.building_source_systems(conn) == {"B10001": "src-a", "B10008": "src-b"}
