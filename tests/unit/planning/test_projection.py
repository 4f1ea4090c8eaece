"""The duration projection's model: exact small cases, what binds (pools, worker slots, parallel
buildings), the worker search for a target date, and the plan glue."""

from __future__ import annotations

import datetime as dt

import pytest

from mailshift.planning import projection as pr
from mailshift.planning.planner import BuildingLoad, PlanLimits, plan_waves

RATES = pr.Rates(mailbox_s=1.0, message_s=0.0, bytes_per_s=1e6, task_overhead_s=1.0, preflight_mailbox_s=0.1,
                 verify_fixed_s=6.0, verify_ratio=0.4, trigger_poll_s=5.0)
MB = 2_000_000  # 2 s per mailbox at 1 MB/s, +1 s mailbox overhead = 3 s


def wave(*buildings, number=1):
    return pr.WaveWork(number, dt.date(2027, 1, 11), tuple(buildings))


def building(bid, system, n, nbytes=MB, msgs=0):
    return pr.BuildingWork(bid, system, ((msgs, nbytes),) * n)


def test_mailbox_seconds_is_additive():
    r = pr.Rates(mailbox_s=0.5, message_s=0.01, bytes_per_s=2e6)
    assert pr.mailbox_seconds(100, 4_000_000, r) == pytest.approx(0.5 + 1.0 + 2.0)


def test_one_building_exact():
    c = pr.Cluster(workers=1, concurrency=4, pool_slots={"a": 1})
    p = pr.project_wave(wave(building("B1", "a", 3)), RATES, c)
    copy = 1 + 3 * 3            # one batch (<= 5 mailboxes): overhead + 3 mailboxes
    verify = 1 + 6 + 0.4 * 9    # overhead + fixed + ratio x copy work
    body = (1 + 0.3) + copy + verify + 1 + 2.5  # preflight, copy, verify, mark_proven, trigger poke
    assert p.seconds == pytest.approx(body + 2)  # + announce, summary
    assert p.totals == {"buildings": 1, "mailboxes": 3, "messages": 0, "bytes": 3 * MB}


def test_pool_binds_and_more_slots_help():
    b = building("B1", "a", 40)  # 8 batches of 5 mailboxes, 16 s each
    rates = pr.Rates(**{**RATES.to_dict(), "verify_ratio": 0.0})
    one = pr.project_wave(wave(b), rates, pr.Cluster(4, 8, {"a": 1}))
    four = pr.project_wave(wave(b), rates, pr.Cluster(4, 8, {"a": 4}))
    assert one.bottleneck == "pool a" and four.bottleneck == "pool a"
    copy_one_lane = 8 * 16
    assert one.seconds - four.seconds == pytest.approx(copy_one_lane - copy_one_lane / 4)


def test_worker_slots_bind_when_pools_are_wide():
    b = building("B1", "a", 40)
    narrow = pr.project_wave(wave(b), RATES, pr.Cluster(1, 3, {"a": 40}))  # 1 slot: trigger, 2 for tasks
    wide = pr.project_wave(wave(b), RATES, pr.Cluster(4, 3, {"a": 40}))
    assert narrow.bottleneck == "worker slots"
    assert narrow.seconds > wide.seconds


def test_each_system_has_its_own_pool():
    a, b = building("A1", "a", 10), building("B1", "b", 10)
    both = pr.project_wave(wave(a, b), RATES, pr.Cluster(2, 8, {"a": 1, "b": 1}))
    alone = pr.project_wave(wave(a), RATES, pr.Cluster(2, 8, {"a": 1, "b": 1}))
    assert both.seconds == pytest.approx(alone.seconds)  # they run side by side


def test_parallel_buildings_serialises_buildings():
    bs = [building(f"B{i}", "a", 5) for i in range(4)]
    one = pr.project_wave(wave(*bs), RATES, pr.Cluster(4, 8, {"a": 8}, parallel_buildings=1))
    four = pr.project_wave(wave(*bs), RATES, pr.Cluster(4, 8, {"a": 8}, parallel_buildings=4))
    assert one.seconds == pytest.approx(4 * (four.seconds - 2) + 2)


def test_one_big_building_is_bound_by_its_single_verify_task():
    big = building("B1", "a", 400)
    p = pr.project_wave(wave(big), RATES, pr.Cluster(8, 16, {"a": 40}))
    assert p.bottleneck.startswith("verify of B1")


def test_triggers_never_take_the_last_slot():
    bs = [building(f"B{i}", "a", 5) for i in range(6)]
    p = pr.project_wave(wave(*bs), RATES, pr.Cluster(1, 3, {"a": 4}, parallel_buildings=6))
    assert p.seconds > 6 * 16  # finished (no deadlock), buildings mostly one after the other


def test_worker_cap_lowers_the_connection_rate():
    r = pr.Rates(worker_lanes=2.5)
    assert pr.slowdown(r, pr.Cluster(1, 8, {"a": 10})) == pytest.approx(8 / 2.5)   # 8 lanes on one worker
    assert pr.slowdown(r, pr.Cluster(10, 8, {"a": 10})) == pytest.approx(1.0)      # pool: 10 lanes on 10 workers
    assert pr.slowdown(pr.Rates(), pr.Cluster(1, 64, {"a": 64})) == 1.0


def test_projection_calendar_and_late_waves():
    w1 = wave(building("B1", "a", 5), number=1)
    w2 = pr.WaveWork(2, dt.date(2027, 1, 18), (building("B2", "a", 5),))
    p = pr.project([w1, w2], RATES, pr.Cluster(1, 4, {"a": 1}), days_between=7)
    assert p.back_to_back_seconds == pytest.approx(sum(w.seconds for w in p.waves))
    assert p.calendar_end().date() == dt.date(2027, 1, 18)
    assert p.late_waves() == []
    huge = pr.WaveWork(3, dt.date(2027, 1, 25), (building("B3", "a", 5, nbytes=10**12),))
    assert pr.project([huge], RATES, pr.Cluster(1, 4, {"a": 1}), days_between=7).late_waves() == [3]
    d = p.to_dict()
    assert d["waves"][0]["number"] == 1 and "back_to_back_days" in d


def test_workers_for_target():
    rates = pr.Rates(mailbox_s=1, message_s=0, bytes_per_s=1e6, worker_lanes=2, task_overhead_s=1)
    waves = [wave(*(building(f"B{i}", "a", 50, nbytes=10**9) for i in range(8)))]
    cluster = pr.Cluster(1, 4, {"a": 16}, parallel_buildings=8)
    start = dt.date(2027, 1, 1)
    res = pr.workers_for_target(waves, rates, cluster, dt.date(2027, 1, 2), start)
    assert res["feasible"] and res["workers"] >= 2
    n = res["workers"]
    assert pr.project(waves, rates, cluster.with_workers(n)).back_to_back_seconds <= 86400
    assert pr.project(waves, rates, cluster.with_workers(n - 1)).back_to_back_seconds > 86400
    # a target the pools cannot make, however many workers
    no = pr.workers_for_target(waves, rates, pr.Cluster(1, 4, {"a": 1}), dt.date(2027, 1, 2), start)
    assert not no["feasible"] and "pools" in no["why"]


def test_wave_work_from_plan():
    loads = [BuildingLoad(f"B{i}", "d.jp", "a" if i % 2 else "b", 10, 3, 3 * MB, 30) for i in range(6)]
    plan = plan_waves(loads, PlanLimits(start_date=dt.date(2027, 1, 11), pilot_buildings=2, max_households=20))
    sizes = {b.id: [(10, MB)] * 3 for b in loads}
    waves = pr.wave_work_from_plan(plan, sizes, {b.id: b.source_system for b in loads})
    assert [w.number for w in waves] == [w.number for w in plan.waves]
    assert sum(w.totals["mailboxes"] for w in waves) == 18
    assert waves[0].start_date == dt.date(2027, 1, 11)
    text = pr.render(pr.project(waves, RATES, pr.Cluster(2, 4, {"a": 2, "b": 2}), days_between=7))
    assert "wave" in text and "total copy time" in text


def test_workers_for_calendar():
    rates = pr.Rates(mailbox_s=1, message_s=0, bytes_per_s=1e6, worker_lanes=2, task_overhead_s=1,
                     verify_ratio=0.0)
    waves = [wave(*(building(f"B{i}", "a", 20, nbytes=4 * 10**9) for i in range(4)), number=n) for n in (1, 2)]
    cluster = pr.Cluster(1, 8, {"a": 16}, parallel_buildings=4)
    res = pr.workers_for_calendar(waves, rates, cluster, days_between=1)
    assert res["feasible"]
    n = res["workers"]
    longest = max(w.seconds for w in pr.project(waves, rates, cluster.with_workers(n)).waves)
    assert longest <= 86400 < max(w.seconds for w in pr.project(waves, rates, cluster.with_workers(n - 1)).waves)
    assert not pr.workers_for_calendar(waves, rates, pr.Cluster(1, 8, {"a": 1}), days_between=1)["feasible"]


@pytest.mark.integration
def test_plan_projection_cli(lab_config, tmp_path, capsys):
    """`mailshift plan --projection` on a loaded inventory: table, totals, workers for a date."""
    import json

    import psycopg2

    from lab import corpus
    from mailshift.cli import main
    from mailshift.inventory.load import load_inventory
    from support.mail import fresh_database

    inv = corpus.generate_inventory(42, "demo")
    exports = corpus.write_exports(inv, tmp_path / "exports", lab_config)
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        load_inventory(conn, exports)
        conn.close()
        args = ["--db", dsn, "plan", "--pilot-buildings", "2", "--max-households", "10", "--start", "2027-01-11",
                "--dry-run", "--projection", "--workers", "2", "--pool-slots", "src-a=3",
                "--target-date", "2027-01-13"]
        assert main(args + ["--brief"]) == 0
        text = capsys.readouterr().out
        assert "projection: 2 worker(s)" in text and "src-a=3" in text and "target 2027-01-13" in text
        domains = sorted({m.address.split("@")[1] for m in inv.mailboxes})
        for d in domains:   # one cutover night per domain: one MX swap each
            assert f"cutover night of {d}" in text
        assert main(args + ["--json"]) == 0
        doc = json.loads(capsys.readouterr().out)["projection"]
    assert sorted(doc["cutover"]) == domains
    assert sum(n["mailboxes"] for n in doc["cutover"].values()) == len(inv.mailboxes)
    for n in doc["cutover"].values():
        t = n["night"]
        assert t["approval_to_swap_s"] == pytest.approx(t["final_pass_s"] + t["reverify_s"], abs=0.2)
        assert n["window_hours"] == 6.0 and n["workers_for_window"] >= 1
    assert [w["number"] for w in doc["waves"]] == [1, 2, 3]
    assert doc["size_sources"] == {"ledger": 0, "sizes": 0, "estimate": len(inv.mailboxes)}
    assert doc["cluster"]["pool_slots"]["src-a"] == 3 and doc["target"]["feasible"]
