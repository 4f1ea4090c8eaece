"""Wave plans in a real, fresh mailshift database (demo inventory), and `mailshift plan`."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import psycopg2
import pytest

from lab import corpus
from mailshift import cli
from mailshift.inventory import load_inventory
from mailshift.planning import snapshot
from mailshift.planning.planner import PlanError, PlanLimits, plan_waves
from mailshift.store import plans as plan_store
from support.mail import fresh_database

START = dt.date(2025, 8, 6)   # wave 2 = 2025-08-13: on B10022's blackout dates (demo inventory)


@pytest.fixture
def dsn(lab_config, tmp_path):
    inv = corpus.generate_inventory(42, "demo")
    exports = corpus.write_exports(inv, tmp_path / "exports", lab_config)
    with fresh_database(lab_config) as dsn:
        load_inventory(dsn, exports)
        yield dsn


@pytest.fixture
def conn(dsn):
    c = psycopg2.connect(dsn)
    yield c
    c.close()


def plan_and_store(conn, limits, **kw):
    with plan_store.plan_transaction(conn):
        inp = plan_store.read_inventory(conn, **kw)
        plan = plan_waves(inp.loads, dataclasses.replace(limits, closed_waves=inp.closed_waves))
        res = plan_store.store_plan(conn, plan, inp, created_by="test", commit=False)
    return inp, plan, res


def rows(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        out = cur.fetchall()
    conn.rollback()
    return out


LIMITS = PlanLimits(start_date=START, pilot_buildings=2, max_households=12, max_mailboxes=None)


def test_read_inventory_matches_the_database(conn):
    inp = plan_store.read_inventory(conn)
    conn.rollback()
    assert len(inp.loads) == 6
    (n_h,), = rows(conn, "SELECT count(*) FROM household")
    (n_m,), = rows(conn, "SELECT count(*) FROM mailbox")
    assert sum(b.households for b in inp.loads) == n_h
    assert sum(b.mailboxes for b in inp.loads) == n_m == sum(len(v.ids) for v in inp.mailboxes.values())
    by = inp.by_id
    assert by["B10001"].pinned_wave == 1
    assert dt.date(2025, 8, 13) in by["B10022"].blackout_dates
    assert inp.sizes_missing == n_m and all(b.bytes > 0 for b in inp.loads)
    from mailshift.planning.planner import estimate_mailbox
    quotas = rows(conn, "SELECT quota_bytes FROM mailbox")
    assert sum(b.bytes for b in inp.loads) == sum(estimate_mailbox(q).bytes for (q,) in quotas)
    assert sum(b.messages for b in inp.loads) == sum(estimate_mailbox(q).messages for (q,) in quotas)
    assert inp.systems and inp.closed_waves == frozenset()


def test_store_is_one_transaction_and_idempotent(conn):
    inp, plan, res = plan_and_store(conn, LIMITS)
    assert not res.unchanged and res.buildings_changed == 6 and res.waves_changed == len(plan.waves)
    got = dict(rows(conn, "SELECT id, wave_id FROM building"))
    assert got == dict(plan.assignment)
    assert got["B10001"] == 1                        # pinned (and in the pilot)
    assert got["B10022"] != 2                        # blackout 2025-08-13 = wave 2
    waves = plan_store.read_stored_waves(conn)
    assert [w["number"] for w in waves] == [w.number for w in plan.waves]
    assert waves[0]["kind"] == "pilot" and waves[0]["start_date"] == START
    assert all(w["plan_id"] == res.plan_id and w["status"] == "planned" for w in waves)
    assert sum(w["totals"]["households"] for w in waves) == sum(b.households for b in inp.loads)
    assert all(set(w["totals"]["by_system"]) <= set(inp.systems) for w in waves)
    reasons = dict(rows(conn, "SELECT id, wave_reason_code FROM building"))
    assert reasons["B10001"] == "pinned" and set(reasons.values()) <= {"pinned", "pilot", "fill", "capacity",
                                                                       "blackout", "oversize"}
    est = dict(rows(conn, "SELECT id, est_bytes FROM building"))
    assert est == {b.id: b.bytes for b in inp.loads}

    before = rows(conn, "SELECT id, updated_at FROM building ORDER BY id") + \
        rows(conn, "SELECT id, updated_at FROM wave ORDER BY id")
    _, plan2, res2 = plan_and_store(conn, LIMITS)
    assert plan2.plan_hash == plan.plan_hash
    assert res2.unchanged and res2.plan_id == res.plan_id and res2.buildings_changed == 0
    assert before == rows(conn, "SELECT id, updated_at FROM building ORDER BY id") + \
        rows(conn, "SELECT id, updated_at FROM wave ORDER BY id")
    assert rows(conn, "SELECT count(*) FROM wave_plan") == [(1,)]

    # a failing store leaves nothing behind
    from mailshift.planning.planner import Reason
    last = plan.waves[-1]
    broken = dataclasses.replace(last, name="renamed", reasons={b: Reason("bogus", "x") for b in last.buildings})
    bad = dataclasses.replace(plan, plan_hash="0" * 64, waves=plan.waves[:-1] + (broken,))
    with pytest.raises(psycopg2.errors.CheckViolation):
        plan_store.store_plan(conn, bad, inp)
    assert rows(conn, "SELECT count(*) FROM wave_plan") == [(1,)]
    assert rows(conn, "SELECT name FROM wave WHERE id = %s", (last.number,)) == [(last.name,)]


def test_wave_reads_for_the_wave_dag_and_projection(conn):
    """The wave DAG's announcement estimate and the projection's per-mailbox sizes."""
    from mailshift.planning.projection import read_mailbox_work

    inp, plan, _ = plan_and_store(conn, LIMITS)
    for w in plan.waves:
        assert plan_store.wave_estimated_bytes(conn, w.number) == sum(inp.by_id[b].bytes for b in w.buildings)
    assert plan_store.wave_estimated_bytes(conn, len(plan.waves) + 1) == 0
    work, systems, sources = read_mailbox_work(conn)
    conn.rollback()
    assert systems == {b.id: b.source_system for b in inp.loads}
    assert sources == {"ledger": 0, "sizes": 0, "estimate": sum(b.mailboxes for b in inp.loads)}
    assert {b: sum(n for _, n in sizes) for b, sizes in work.items()} == {b.id: b.bytes for b in inp.loads
                                                                           if b.mailboxes}


def test_replan_removes_surplus_waves_and_keeps_started_waves(conn):
    _, plan, _ = plan_and_store(conn, dataclasses.replace(LIMITS, max_households=6))
    n_before = len(plan.waves)
    _, plan2, res2 = plan_and_store(conn, dataclasses.replace(LIMITS, max_households=1000, pilot_buildings=1))
    assert len(plan2.waves) < n_before and res2.waves_deleted == n_before - len(plan2.waves)
    assert [w["number"] for w in plan_store.read_stored_waves(conn)] == [w.number for w in plan2.waves]
    assert rows(conn, "SELECT count(*) FROM wave_plan") == [(2,)]

    # wave 1 starts; a re-plan with a bigger pilot may not add to it, nor move its buildings
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE wave SET status = 'running' WHERE id = 1")
    pilot = set(plan2.waves[0].buildings)
    inp3, plan3, _ = plan_and_store(conn, dataclasses.replace(LIMITS, pilot_buildings=4, max_households=5))
    assert inp3.closed_waves == frozenset({1})
    assert set(plan3.waves[0].buildings) == pilot
    assert {plan3.waves[0].reasons[b].code for b in pilot} == {"locked"}
    assert rows(conn, "SELECT status FROM wave WHERE id = 1") == [("running",)]

    # pinning a building into the started wave is a clear error naming it; nothing changes
    other = sorted(set(plan3.assignment) - pilot)[0]
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE building SET pinned_wave = 1 WHERE id = %s", (other,))
    before = rows(conn, "SELECT id, wave_id FROM building ORDER BY id")
    with pytest.raises(PlanError, match=f"building {other}: pinned to wave 1, which has already started"):
        plan_and_store(conn, LIMITS)
    assert before == rows(conn, "SELECT id, wave_id FROM building ORDER BY id")


def test_cli_plan_writes_db_and_snapshot(dsn, conn, tmp_path, capsys):
    sizes = tmp_path / "sizes.csv"
    (addr,), = rows(conn, "SELECT address FROM mailbox ORDER BY id LIMIT 1")
    sizes.write_text(f"address,bytes,messages\n{addr.upper()},123456789,4321\n", encoding="utf-8")
    sdir = tmp_path / "snap"
    args = ["--db", dsn, "plan", "--start", START.isoformat(), "--pilot-buildings", "2", "--max-households", "12",
            "--snapshot-dir", str(sdir), "--shards", "4", "--sizes", str(sizes)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "== wave 1 (pilot) from 2025-08-06" in out and "stored as plan" in out and "B10001" in out

    m = snapshot.read_manifest(sdir)
    (plan_id, plan_hash), = rows(conn, "SELECT id, plan_hash FROM wave_plan")
    assert m["plan_id"] == plan_id and m["plan_hash"] == plan_hash and m["shards"] == 4
    blds = snapshot.load_all(sdir)
    db_waves = dict(rows(conn, "SELECT id, wave_id FROM building"))
    assert {b.id: b.wave for b in blds} == db_waves
    db_mb = rows(conn, "SELECT h.building_id, m.id, m.address, m.protocol FROM mailbox m "
                       "JOIN household h ON h.id = m.household_id ORDER BY 1, 2")
    assert [(b.id, *mb) for b in blds for mb in b.mailboxes] == db_mb
    assert {b.pool for b in blds} == {snapshot.pool_name(s) for (s,) in rows(conn, "SELECT id FROM source_system")}
    b1 = next(b for b in blds if b.id == "B10008")
    assert b1.max_connections == 2                   # demo spec override
    for k in range(4):
        assert all(snapshot.shard_of(b.id, 4) == k for b in snapshot.load_shard(sdir, k))

    # the measured size went into the estimate
    (bid,), = rows(conn, "SELECT h.building_id FROM mailbox m JOIN household h ON h.id = m.household_id "
                         "WHERE m.address = %s", (addr,))
    (est,), = rows(conn, "SELECT est_bytes FROM building WHERE id = %s", (bid,))
    assert est >= 123456789

    # again, with no options: the stored limits are reused, nothing changes; JSON output
    assert cli.main(["--db", dsn, "plan", "--snapshot-dir", str(sdir), "--shards", "4", "--sizes", str(sizes),
                     "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan_hash"] == plan_hash and doc["stored"]["unchanged"] is True
    assert doc["limits"]["max_households"] == 12

    # dry run with impossible limits: error, exit 2
    assert cli.main(["--db", dsn, "plan", "--dry-run", "--days-between", "0"]) == 2
    assert "days_between" in capsys.readouterr().err
