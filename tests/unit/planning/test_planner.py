"""The wave planner (pure logic) and the snapshot files."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random

import pytest

from mailshift.planning import snapshot
from mailshift.planning.planner import (
    BuildingLoad,
    MailboxSize,
    PlanError,
    PlanLimits,
    SystemLimit,
    derive_system_limits,
    estimate_mailbox,
    parse_size,
    plan_waves,
    read_mailbox_sizes,
    render_table,
)

START = dt.date(2025, 9, 1)
GB = 1 << 30


def B(i, households=10, mailboxes=None, system="src-a", domain="a.example.jp", **kw) -> BuildingLoad:
    mailboxes = households * 3 // 2 if mailboxes is None else mailboxes
    return BuildingLoad(f"B{i:05d}", domain, system, households, mailboxes, kw.pop("bytes", mailboxes * GB),
                        kw.pop("messages", mailboxes * 1000), **kw)


def L(**kw) -> PlanLimits:
    kw.setdefault("start_date", START)
    kw.setdefault("pilot_buildings", 2)
    kw.setdefault("max_households", 100)
    kw.setdefault("max_mailboxes", None)
    return PlanLimits(**kw)


def synthetic(n=300, seed=1) -> list[BuildingLoad]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        h = max(1, int(rng.lognormvariate(3, 0.7)))
        out.append(B(i, h, int(h * 1.3), system=("src-a", "src-b", "src-c")[i % 3],
                     domain=f"d{i % 7}.example.jp",
                     blackout_dates=frozenset({START + dt.timedelta(days=7 * rng.randrange(1, 20))})
                     if rng.random() < 0.1 else frozenset()))
    return out


def check_invariants(plan, loads, limits):
    by_id = {b.id: b for b in loads}
    seen = [b for w in plan.waves for b in w.buildings]
    assert sorted(seen) == sorted(by_id), "every building exactly once (kept whole)"
    assert plan.assignment == {b: w.number for w in plan.waves for b in w.buildings}
    for w in plan.waves:
        assert w.start_date == START + dt.timedelta(days=(w.number - 1) * limits.days_between)
        assert w.totals.households == sum(by_id[b].households for b in w.buildings)
        assert w.totals.buildings == len(w.buildings)
        assert sum(t.mailboxes for t in w.totals_by_system.values()) == w.totals.mailboxes
        for b in w.buildings:
            assert w.start_date not in by_id[b].blackout_dates
            assert w.reasons[b].code in {"locked", "pinned", "pilot", "fill", "capacity", "blackout", "oversize"}
        oversize = [b for b in w.buildings if w.reasons[b].code == "oversize"]
        if oversize:
            assert len(w.buildings) == 1
        elif not any(w.reasons[b].code == "pinned" for b in w.buildings):
            if limits.max_households:
                assert w.totals.households <= limits.max_households
            if limits.max_mailboxes:
                assert w.totals.mailboxes <= limits.max_mailboxes
            if limits.max_bytes:
                assert w.totals.bytes <= limits.max_bytes
            for s, sl in limits.system_limits.items():
                t = w.totals_by_system.get(s)
                if t and sl.max_mailboxes:
                    assert t.mailboxes <= sl.max_mailboxes
                if t and sl.max_bytes:
                    assert t.bytes <= sl.max_bytes


def test_limits_and_whole_buildings_on_a_synthetic_inventory():
    loads = synthetic()
    limits = L(max_households=600, max_mailboxes=700, max_bytes=800 * GB,
               system_limits={"src-b": SystemLimit(max_mailboxes=200)}, pilot_buildings=4)
    plan = plan_waves(loads, limits)
    check_invariants(plan, loads, limits)
    assert plan.totals.households == sum(b.households for b in loads)
    assert len(plan.waves) > 5


def test_pilot_is_wave_one_smallest_buildings_round_robin_over_systems():
    loads = [B(1, 50, system="src-a"), B(2, 5, system="src-a"), B(3, 7, system="src-a"),
             B(4, 40, system="src-b"), B(5, 9, system="src-b"), B(6, 30, system="src-a")]
    plan = plan_waves(loads, L(pilot_buildings=3))
    pilot = plan.waves[0]
    assert pilot.number == 1 and pilot.kind == "pilot" and pilot.name == "pilot"
    assert pilot.buildings == ("B00002", "B00003", "B00005")   # a, b, a: both systems covered
    assert {pilot.reasons[b].code for b in pilot.buildings} == {"pilot"}
    assert "smallest eligible building of source system src-b" in pilot.reasons["B00005"].text
    assert all(w.kind == "regular" for w in plan.waves[1:])
    # the pilot takes nothing else even though it has room
    assert pilot.totals.households == 21
    assert "B00001" not in pilot.buildings


def test_no_pilot():
    plan = plan_waves([B(1), B(2)], L(pilot_buildings=0))
    assert plan.waves[0].kind == "regular" and plan.waves[0].buildings == ("B00001", "B00002")
    assert plan.waves[0].reasons["B00001"].code == "fill"


def test_household_limit_opens_new_waves_and_explains():
    loads = [B(i, 40) for i in range(1, 8)]
    plan = plan_waves(loads, L(pilot_buildings=1, max_households=100))
    assert [len(w.buildings) for w in plan.waves] == [1, 2, 2, 2]
    r = plan.waves[2].reasons[plan.waves[2].buildings[0]]
    assert r.code == "capacity" and "max_households" in r.text


def test_per_source_system_capacity():
    loads = [B(i, 10, 10, system="src-a") for i in range(1, 5)] + \
            [B(i, 10, 10, system="src-b") for i in range(5, 9)]
    limits = L(pilot_buildings=0, max_households=1000,
               system_limits={"src-a": SystemLimit(max_mailboxes=20), "src-b": SystemLimit(max_bytes=30 * GB)})
    plan = plan_waves(loads, limits)
    check_invariants(plan, loads, limits)
    for w in plan.waves:
        assert w.totals_by_system.get("src-a", None) is None or w.totals_by_system["src-a"].mailboxes <= 20
        assert w.totals_by_system.get("src-b", None) is None or w.totals_by_system["src-b"].bytes <= 30 * GB
    assert [w.totals.buildings for w in plan.waves] == [5, 3]
    assert any("src-a max_mailboxes" in w.reasons[b].text for w in plan.waves for b in w.buildings)


def test_derive_system_limits_from_connections():
    d = derive_system_limits({"src-a": 20, "src-b": 10}, mailboxes_per_connection=500)
    assert d == {"src-a": SystemLimit(10_000, None), "src-b": SystemLimit(5_000, None)}


def test_blackout_dates_are_respected_and_explained():
    wave2 = START + dt.timedelta(days=7)
    loads = [B(1, 5), B(2, 5, blackout_dates=frozenset({wave2})), B(3, 5)]
    plan = plan_waves(loads, L(pilot_buildings=1))
    assert plan.assignment["B00002"] == 3
    r = plan.wave_of("B00002").reasons["B00002"]
    assert r.code == "blackout" and "2025-09-08" in r.text
    # a window of several days: blackout on the 2nd day of wave 2's window counts too
    loads = [B(1, 5), B(2, 5, blackout_dates=frozenset({wave2 + dt.timedelta(days=2)}))]
    plan = plan_waves(loads, L(pilot_buildings=1, window_days=3))
    assert plan.assignment["B00002"] == 3
    assert plan.assignment["B00001"] == 1


def test_blackout_keeps_building_out_of_the_pilot():
    loads = [B(1, 1, blackout_dates=frozenset({START})), B(2, 50)]
    plan = plan_waves(loads, L(pilot_buildings=1))
    assert plan.waves[0].buildings == ("B00002",)
    assert plan.assignment["B00001"] == 2


def test_pins_are_obeyed_and_gaps_become_empty_waves():
    loads = [B(1, 5), B(2, 5, pinned_wave=5), B(3, 5, pinned_wave=1), B(4, 5)]
    plan = plan_waves(loads, L(pilot_buildings=2))
    assert plan.assignment["B00002"] == 5
    assert plan.waves[4].reasons["B00002"].code == "pinned"
    assert "B00003" in plan.waves[0].buildings and plan.waves[0].reasons["B00003"].code == "pinned"
    assert len(plan.waves[0].buildings) == 2      # pin counts towards the pilot
    assert len(plan.waves) == 5
    empty = [w for w in plan.waves if not w.buildings]
    assert empty and all("empty" in w.notes[0] for w in empty)
    # fill goes into waves with pinned buildings when there is room
    assert plan.assignment["B00004"] == 2 or plan.assignment["B00001"] == 2


def test_impossible_pins_are_errors_naming_the_building():
    wave3 = START + dt.timedelta(days=14)
    loads = [B(1, 5, pinned_wave=3, blackout_dates=frozenset({wave3})),
             B(2, 60, pinned_wave=4), B(3, 60, pinned_wave=4), B(4, 5, pinned_wave=2)]
    with pytest.raises(PlanError) as e:
        plan_waves(loads, L(pilot_buildings=0, closed_waves=frozenset({2})))
    msg = str(e.value)
    assert "building B00001: pinned to wave 3" in msg and "2025-09-15" in msg and "blackout" in msg
    assert "wave 4: the buildings pinned to it (B00002, B00003) do not fit" in msg
    assert "building B00004: pinned to wave 2, which has already started" in msg
    assert len(e.value.problems) == 3


def test_single_pinned_building_over_the_limit_is_allowed_with_a_note():
    plan = plan_waves([B(1, 500, pinned_wave=2), B(2, 5)], L(pilot_buildings=1))
    assert plan.waves[1].buildings == ("B00001",)
    assert any("alone exceeds" in n for n in plan.waves[1].notes)


def test_building_bigger_than_the_wave_limit_gets_its_own_wave():
    loads = [B(1, 30), B(2, 250), B(3, 30), B(4, 30)]
    plan = plan_waves(loads, L(pilot_buildings=1))
    w = plan.wave_of("B00002")
    assert w.buildings == ("B00002",)
    r = w.reasons["B00002"]
    assert r.code == "oversize" and "250 households > limit 100" in r.text and "kept whole" in r.text
    assert "B00002" not in plan.waves[0].buildings   # never in the pilot
    # a building bigger than its system's capacity, too
    plan = plan_waves([B(1, 5, 50, system="src-b"), B(2, 5)],
                      L(pilot_buildings=0, system_limits={"src-b": SystemLimit(max_mailboxes=40)}))
    assert plan.wave_of("B00001").buildings == ("B00001",)
    assert "mailboxes of src-b" in plan.wave_of("B00001").reasons["B00001"].text


def test_locked_buildings_stay_in_started_waves_which_take_nothing_new():
    loads = [B(1, 5, locked_wave=1), B(2, 5, locked_wave=2, pinned_wave=4), B(3, 5), B(4, 5)]
    limits = L(pilot_buildings=2, closed_waves=frozenset({1, 2}))
    plan = plan_waves(loads, limits)
    assert plan.waves[0].buildings == ("B00001",) and plan.waves[1].buildings == ("B00002",)
    assert plan.waves[1].reasons["B00002"].code == "locked"
    assert "pin to wave 4 is ignored" in plan.waves[1].reasons["B00002"].text
    assert plan.assignment["B00003"] == 3 and plan.assignment["B00004"] == 3


def test_deterministic_whatever_the_input_order():
    loads = synthetic(200, seed=7)
    limits = L(max_households=400, pilot_buildings=3)
    a = plan_waves(loads, limits)
    shuffled = loads[:]
    random.Random(3).shuffle(shuffled)
    b = plan_waves(shuffled, limits)
    assert a == b and a.plan_hash == b.plan_hash
    assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)
    c = plan_waves(loads, dataclasses.replace(limits, max_households=401))
    assert c.plan_hash != a.plan_hash


def test_domains_are_kept_contiguous():
    loads = [B(i, 20, domain="big.jp") for i in range(1, 11)] + [B(i, 20, domain="small.jp") for i in range(11, 14)]
    plan = plan_waves(loads, L(pilot_buildings=0))
    # the smaller domain first, then the larger, each in consecutive waves
    assert {plan.assignment[f"B{i:05d}"] for i in range(11, 14)} == {1}
    big = [plan.assignment[f"B{i:05d}"] for i in range(1, 11)]
    assert big == sorted(big) and big[0] == 1 and big[-1] == 3


def test_invalid_limits_and_duplicates():
    with pytest.raises(PlanError) as e:
        plan_waves([B(1), B(1)], L(days_between=0, max_households=0))
    msg = str(e.value)
    assert "days_between" in msg and "max_households" in msg and "building B00001: listed twice" in msg


def test_render_table_and_summary():
    loads = synthetic(30)
    plan = plan_waves(loads, L(max_households=200))
    text = render_table(plan, {b.id: b for b in loads})
    assert text.count("== wave ") == len(plan.waves)
    assert "pilot" in text and "B00000" in text
    assert render_table(plan, brief=True).count("\n") < text.count("\n")
    s = plan.summary()
    assert [w["buildings"] for w in s["waves"]] == [len(w.buildings) for w in plan.waves]
    assert PlanLimits.from_dict(plan.limits.to_dict()) == plan.limits


def test_sizes_estimate_and_csv(tmp_path):
    assert estimate_mailbox(None).bytes == 200 * 1024 * 1024
    assert estimate_mailbox(50 * 1024 * 1024).bytes == 50 * 1024 * 1024
    p = tmp_path / "sizes.csv"
    p.write_text("address,bytes,messages\nA@x.jp,1000,3\nb@x.jp,65536,\n", encoding="utf-8")
    assert read_mailbox_sizes(p) == {"a@x.jp": MailboxSize(1000, 3), "b@x.jp": MailboxSize(65536, 1)}
    p.write_text("address,bytes\na@x.jp,lots\n", encoding="utf-8")
    with pytest.raises(PlanError, match=":2: bad bytes"):
        read_mailbox_sizes(p)
    assert parse_size("2T") == 2 << 40 and parse_size("1.5GiB") == 3 << 29 and parse_size("10GB") == 10 ** 10
    with pytest.raises(ValueError):
        parse_size("lots")


# -- snapshot ---------------------------------------------------------------------------------
def _snap_buildings(n=200):
    out = []
    mid = 1
    for i in range(n):
        mbs = []
        for _ in range(1 + i % 3):
            mbs.append(snapshot.SnapshotMailbox(mid, f"u{mid}@d.jp", "pop3" if mid % 5 == 0 else "imap"))
            mid += 1
        system = "src-a" if i % 2 else "src-b"
        out.append(snapshot.SnapshotBuilding(f"B{i:05d}", f"ビル {i}", "d.jp", system, snapshot.pool_name(system),
                                             1 + i % 4, None if i % 7 else 2, tuple(mbs)))
    return out


def test_pool_and_shard_function_are_stable():
    assert snapshot.pool_name("src-a") == "src_src_a"
    # fixed values: the shard of a building must never change between processes or versions
    assert [snapshot.shard_of(f"B{i:05d}", 16) for i in range(5)] == \
        [snapshot.shard_of(f"B{i:05d}", 16) for i in range(5)]
    import hashlib
    assert snapshot.shard_of("B10001", 16) == int.from_bytes(
        hashlib.blake2b(b"B10001", digest_size=8).digest(), "big") % 16
    parts = snapshot.split_shards(_snap_buildings(), 16)
    assert sum(len(p) for p in parts) == 200 and all([b.id for b in p] == sorted(b.id for b in p) for p in parts)
    assert all(len(p) > 0 for p in parts)


def test_snapshot_roundtrip_and_shard_reader(tmp_path):
    blds = _snap_buildings()
    m = snapshot.write_snapshot(tmp_path, blds, plan_id=3, plan_hash="ab" * 32, shards=8,
                                waves=[{"number": 1, "name": "pilot", "kind": "pilot", "start_date": "2025-09-01"}],
                                source_systems={"src-a": 20, "src-b": 10})
    assert m["buildings"] == 200 and m["shards"] == 8 and len(m["files"]) == 8
    assert m["source_systems"]["src-a"] == {"pool": "src_src_a", "max_connections": 20}
    assert m["waves"][0]["buildings"] == 50
    assert snapshot.load_all(tmp_path) == blds
    for k in range(8):
        got = snapshot.load_shard(tmp_path, k)
        assert got == [b for b in blds if snapshot.shard_of(b.id, 8) == k]
    # same plan again: shard files untouched (byte-identical, not rewritten)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard_*.json")}
    snapshot.write_snapshot(tmp_path, blds, plan_id=3, plan_hash="ab" * 32, shards=8)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard_*.json")}
    # fewer shards: stale files removed
    snapshot.write_snapshot(tmp_path, blds, plan_id=4, plan_hash="cd" * 32, shards=4)
    assert sorted(p.name for p in tmp_path.glob("shard_*.json")) == [f"shard_0{i}.json" for i in range(4)]
    assert snapshot.load_all(tmp_path) == blds


def test_snapshot_reader_errors(tmp_path):
    with pytest.raises(snapshot.SnapshotError, match="no snapshot"):
        snapshot.load_shard(tmp_path, 0)
    snapshot.write_snapshot(tmp_path, _snap_buildings(20), plan_id=1, plan_hash="ab" * 32, shards=2)
    with pytest.raises(snapshot.SnapshotError, match="out of range"):
        snapshot.load_shard(tmp_path, 2)
    # a shard from another plan (writer caught mid-way): refused, not mixed
    doc = json.loads((tmp_path / "shard_01.json").read_text())
    doc["plan_hash"] = "ef" * 32
    (tmp_path / "shard_01.json").write_text(json.dumps(doc))
    with pytest.raises(snapshot.SnapshotError, match="does not match the manifest"):
        snapshot.load_shard(tmp_path, 1)
