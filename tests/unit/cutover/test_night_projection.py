"""The cutover night's projection (planning.projection.project_cutover): monotone in workers,
bounded by the source pools, and it names the workers that fit a window."""

from mailshift.planning import projection as pr


def _night(workers: int, pools=None):
    mb = {"src-a": [(200, 12_000_000)] * 20_000, "src-b": [(100, 6_000_000)] * 10_000}
    cl = pr.Cluster(workers=workers, concurrency=8, pool_slots=pools or {"src-a": 40, "src-b": 20})
    return pr.project_cutover(mb, pr.Rates(), cl, window_hours=2)


def test_more_workers_never_slower_until_the_pools_bind():
    times = [_night(w)["night"]["approval_to_swap_s"] for w in (1, 2, 4, 8, 16)]
    assert times == sorted(times, reverse=True)
    assert times[-2] - times[-1] < 60        # 8 x 8 slots cover the 60 pool slots: only task overhead is left


def test_workers_for_window_fit_it():
    r = _night(1)
    need = r["workers_for_window"]
    assert need and _night(need)["night"]["approval_to_swap_s"] <= 2 * 3600
    assert need == 1 or _night(need - 1)["night"]["approval_to_swap_s"] > 2 * 3600


def test_the_drain_waits_its_quiet_window():
    n = _night(4)["night"]
    assert n["swap_to_drain_quiet_s"] == n["drain_round_s"] + n["quiet_window_s"]
