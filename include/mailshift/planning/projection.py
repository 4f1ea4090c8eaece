"""Duration projection: how long each wave and the whole migration take on a given cluster, and how
many workers finish by a target date. Pure logic (no SQL, no clock); `mailshift plan --projection`
feeds it the plan, the mailbox sizes (read through store.inventory) and the measured rates.

Model (every input measured, see bench/README.md "Scale-out and projection"):

* one copy connection moves a mailbox in `mailbox_s + messages * message_s + bytes / bytes_per_s`
  seconds (per-connection figures from bench/projection_bench.py); a worker machine runs at most
  `worker_lanes` connections at full speed: with more copy lanes per worker every connection slows
  down in proportion;
* the building DAG is preflight -> copy tasks (batches of `batch_size` mailboxes, one connection
  each, in the source system's pool) -> verify -> mark_proven; every task also costs
  `task_overhead_s` (queueing, process start, ledger connection); verify (ONE task per building,
  as the DAG has it) costs `verify_fixed_s` plus `verify_ratio` x the building's copy time at the
  per-connection rate (the verifier reads both servers);
* resources: `workers * concurrency` task slots (the wave DAG's waiting trigger tasks hold one slot
  per running building), `pool_slots[system]` copy connections per source system across all
  workers (<= the legacy server's connection limit), `parallel_buildings` building runs per wave;
* a list-scheduling simulation (tasks start in ready order whenever a slot and their pool allow,
  as the Airflow scheduler does) gives each wave's duration; the plan's calendar (waves
  `days_between` apart) gives the end date; waves back to back give the shortest possible
  migration; `workers_for_target` searches the smallest worker count that meets a date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rates:
    """Measured costs (seconds, bytes/s). Defaults: the lab's figures, calibrated on a pilot wave
    (bench/README.md "Scale-out and projection"); measure your own servers."""
    mailbox_s: float = 1.12                # per mailbox per connection: logins, LIST, SELECTs, pass rows
    message_s: float = 0.0088              # per message: FETCH + APPEND round trips, ledger rows
    bytes_per_s: float = 31e6              # per connection
    worker_lanes: float | None = None      # per worker machine: copy connections it runs at full speed
                                           # (CPU/NIC bound; more lanes share it), None: no cap (lab: 5.75)
    task_overhead_s: float = 2.7           # per Airflow task: queued -> done
    preflight_mailbox_s: float = 0.8       # per mailbox: one login at each side
    verify_fixed_s: float = 32.0           # per building: GX suite, report
    verify_ratio: float = 0.4              # verify time / copy time (bench "Verify": 0.39)
    trigger_poll_s: float = 5.0            # wave DAG: building-run completion poke interval

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Cluster:
    workers: int
    concurrency: int                        # task slots per worker
    pool_slots: Mapping[str, int]           # copy connections per source system (all workers together)
    parallel_buildings: int = 4             # wave DAG param max_parallel_buildings
    batch_size: int = 5                     # mailboxes per copy task (building DAG BATCH_SIZE)

    def with_workers(self, n: int) -> Cluster:
        return dataclasses.replace(self, workers=n)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "pool_slots": dict(self.pool_slots)}


@dataclass(frozen=True)
class BuildingWork:
    id: str
    source_system: str
    mailboxes: tuple[tuple[int, int], ...]   # (messages, bytes) per mailbox, in mailbox id order


@dataclass(frozen=True)
class WaveWork:
    number: int
    start_date: dt.date | None
    buildings: tuple[BuildingWork, ...]

    @property
    def totals(self) -> dict:
        mbs = [m for b in self.buildings for m in b.mailboxes]
        return {"buildings": len(self.buildings), "mailboxes": len(mbs), "messages": sum(m for m, _ in mbs),
                "bytes": sum(b for _, b in mbs)}


@dataclass
class WaveProjection:
    number: int
    start_date: dt.date | None
    seconds: float
    totals: dict
    bottleneck: str
    copy_connection_seconds: dict[str, float] = field(default_factory=dict)  # per system

    def to_dict(self) -> dict:
        return {"number": self.number, "start_date": self.start_date.isoformat() if self.start_date else None,
                "seconds": round(self.seconds, 1), "hours": round(self.seconds / 3600, 2), "totals": self.totals,
                "bottleneck": self.bottleneck,
                "copy_connection_hours": {k: round(v / 3600, 2) for k, v in self.copy_connection_seconds.items()}}


def mailbox_seconds(messages: int, nbytes: int, rates: Rates, bytes_per_s: float | None = None) -> float:
    return rates.mailbox_s + messages * rates.message_s + nbytes / (bytes_per_s or rates.bytes_per_s)


def slowdown(rates: Rates, cluster: Cluster) -> float:
    """Factor (>= 1) on every copy connection's time once the worker machines' capacity
    (`worker_lanes` full-speed connections each) is shared by all copy lanes."""
    if not rates.worker_lanes:
        return 1.0
    lanes = min(sum(cluster.pool_slots.values()), cluster.workers * cluster.concurrency)
    return max(1.0, lanes / (rates.worker_lanes * cluster.workers))


class _Sim:
    """Discrete-event list scheduling of one wave's building DAGs on slots and pools."""

    def __init__(self, wave: WaveWork, rates: Rates, cluster: Cluster):
        self.r, self.c = rates, cluster
        self.slow = slowdown(rates, cluster)
        self.free_slots = cluster.workers * cluster.concurrency
        self.free_pool = {s: cluster.pool_slots.get(s, 1) for s in {b.source_system for b in wave.buildings}}
        self.ready_control: deque = deque()            # (building index, kind)
        self.ready_copy: dict[str, deque] = {s: deque() for s in self.free_pool}
        self.events: list = []
        self.seq = 0
        self.now = 0.0
        self.waiting = deque(range(len(wave.buildings)))
        self.b = wave.buildings
        self.copies_left: dict[int, int] = {}
        self.copy_work: dict[int, float] = {}
        self.conn_seconds = {s: 0.0 for s in self.free_pool}
        self.longest_verify = (0.0, "")

    def _push(self, at, what):
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, what))

    def _start_buildings(self):
        active = sum(1 for _ in self.copies_left)  # buildings started and not finished
        # a waiting trigger task holds a worker slot (it is not deferrable): never let the triggers
        # take the last slot, or nothing would run (in Airflow too: keep parallel_buildings < slots)
        while self.waiting and active < self.c.parallel_buildings and self.free_slots > 1:
            i = self.waiting.popleft()
            self.free_slots -= 1                     # the wave's trigger task waits on a slot
            self.copies_left[i] = -1
            self.ready_control.append((i, "preflight"))
            active += 1

    def _dispatch(self):
        r = self.r
        progress = True
        while progress and self.free_slots > 0:
            progress = False
            if self.ready_control:
                i, kind = self.ready_control.popleft()
                if kind == "preflight":
                    d = r.task_overhead_s + len(self.b[i].mailboxes) * r.preflight_mailbox_s
                elif kind == "verify":
                    d = r.task_overhead_s + r.verify_fixed_s + r.verify_ratio * self.copy_work[i]
                    self.longest_verify = max(self.longest_verify, (d, self.b[i].id))
                else:
                    d = r.task_overhead_s
                self.free_slots -= 1
                self._push(self.now + d, ("control", i, kind))
                progress = True
                continue
            for s, q in self.ready_copy.items():
                if q and self.free_pool[s] > 0 and self.free_slots > 0:
                    i, seconds = q.popleft()
                    self.free_slots -= 1
                    self.free_pool[s] -= 1
                    self.conn_seconds[s] += seconds
                    self._push(self.now + r.task_overhead_s + seconds, ("copy", i, s))
                    progress = True

    def run(self) -> float:
        self._start_buildings()
        self._dispatch()
        while self.events:
            self.now, _, (what, i, arg) = heapq.heappop(self.events)
            self.free_slots += 1  # the task's slot (for trigger_done: the wave's trigger task's)
            if what == "copy":
                self.free_pool[arg] += 1
                self.copies_left[i] -= 1
                if self.copies_left[i] == 0:
                    self.ready_control.append((i, "verify"))
            elif what == "control" and arg == "preflight":
                b = self.b[i]
                batches = [b.mailboxes[k:k + self.c.batch_size] for k in range(0, len(b.mailboxes), self.c.batch_size)]
                secs = [self.slow * sum(mailbox_seconds(m, n, self.r) for m, n in batch) for batch in batches]
                # verify re-reads both servers at the connection's own rate (no worker-cap throttling)
                self.copy_work[i] = sum(mailbox_seconds(m, n, self.r) for m, n in b.mailboxes)
                self.copies_left[i] = len(secs)
                for x in secs:
                    self.ready_copy[b.source_system].append((i, x))
                if not secs:
                    self.ready_control.append((i, "verify"))
            elif what == "control" and arg == "verify":
                self.ready_control.append((i, "mark_proven"))
            elif what == "control" and arg == "mark_proven":  # done; the trigger task notices at its next poke
                self._push(self.now + self.r.trigger_poll_s / 2, ("trigger_done", i, None))
            elif what == "trigger_done":
                del self.copies_left[i]
            self._start_buildings()
            self._dispatch()
        return self.now


def project_wave(wave: WaveWork, rates: Rates, cluster: Cluster) -> WaveProjection:
    """One wave's duration and what binds it (the resource to add to make it shorter)."""
    sim = _Sim(wave, rates, cluster)
    body = sim.run() if wave.buildings else 0.0
    seconds = body + 2 * rates.task_overhead_s  # announce + summary
    # what binds: the largest per-system connection time / its pool vs. the slots
    per_system = {s: sim.conn_seconds[s] / max(cluster.pool_slots.get(s, 1), 1) for s in sim.conn_seconds}
    slot_bound = sum(sim.conn_seconds.values()) / max(cluster.workers * cluster.concurrency, 1)
    bottleneck = "none"
    if per_system:
        s, v = max(per_system.items(), key=lambda kv: kv[1])
        bottleneck = f"pool {s}" if v >= slot_bound else "worker slots"
        if len(wave.buildings) > cluster.parallel_buildings and body > 1.5 * max(v, slot_bound):
            bottleneck = "parallel_buildings"
        if sim.longest_verify[0] > 0.5 * body:
            bottleneck = f"verify of {sim.longest_verify[1]} ({sim.longest_verify[0] / 3600:.1f} h, one task)"
    return WaveProjection(wave.number, wave.start_date, seconds, wave.totals, bottleneck, dict(sim.conn_seconds))


@dataclass
class Projection:
    waves: list[WaveProjection]
    rates: Rates
    cluster: Cluster
    start_date: dt.date | None
    days_between: int | None

    @property
    def back_to_back_seconds(self) -> float:
        return sum(w.seconds for w in self.waves)

    def calendar_end(self) -> dt.datetime | None:
        """End of the last wave's copy when every wave starts on its planned date."""
        ends = [dt.datetime.combine(w.start_date, dt.time()) + dt.timedelta(seconds=w.seconds)
                for w in self.waves if w.start_date]
        return max(ends) if ends else None

    def late_waves(self) -> list[int]:
        """Waves whose copy does not finish before the next wave starts."""
        if not self.days_between:
            return []
        return [w.number for w in self.waves if w.seconds > self.days_between * 86400]

    def to_dict(self) -> dict:
        end = self.calendar_end()
        return {"rates": self.rates.to_dict(), "cluster": self.cluster.to_dict(),
                "copy_slowdown": round(slowdown(self.rates, self.cluster), 3),
                "waves": [w.to_dict() for w in self.waves],
                "back_to_back_hours": round(self.back_to_back_seconds / 3600, 1),
                "back_to_back_days": round(self.back_to_back_seconds / 86400, 2),
                "calendar_end": end.isoformat(timespec="minutes") if end else None,
                "waves_longer_than_spacing": self.late_waves()}


def project(waves: Sequence[WaveWork], rates: Rates, cluster: Cluster, *, start_date: dt.date | None = None,
            days_between: int | None = None) -> Projection:
    """Every wave projected on the same cluster."""
    return Projection([project_wave(w, rates, cluster) for w in waves], rates, cluster,
                      start_date or next((w.start_date for w in waves if w.start_date), None), days_between)


def workers_for_calendar(waves: Sequence[WaveWork], rates: Rates, cluster: Cluster, days_between: int,
                         *, max_workers: int = 4096) -> dict:
    """Smallest worker count with which every wave's copy fits in the `days_between` before the
    next wave starts (the plan's calendar holds; its end date is then the last wave's start + copy)."""
    budget = days_between * 86400

    def longest(n: int) -> float:
        return max((project_wave(w, rates, cluster.with_workers(n)).seconds for w in waves), default=0.0)

    hi = 1
    while longest(hi) > budget and hi < max_workers:
        hi *= 2
    if longest(hi) > budget:
        return {"feasible": False, "workers": None, "why": f"a wave needs more than {days_between} days "
                f"even with {hi} workers: split it (--max-households) or raise pool slots"}
    lo = max(1, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if longest(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return {"feasible": True, "workers": lo, "longest_wave_hours": round(longest(lo) / 3600, 1)}


def workers_for_target(waves: Sequence[WaveWork], rates: Rates, cluster: Cluster, target: dt.date,
                       start: dt.date, *, max_workers: int = 4096, hours_per_day: float = 24.0) -> dict:
    """Smallest worker count whose back-to-back migration (every wave's copy, one after the other)
    ends by `target`. Returns {workers, days, feasible, floor_days}: `floor_days` is the duration
    with unlimited workers (then only the source systems' pools bind)."""
    budget = max((target - start).days, 0) * hours_per_day * 3600

    def total(n: int) -> float:
        return sum(project_wave(w, rates, cluster.with_workers(n)).seconds for w in waves)

    # beyond the point where worker slots exceed every pool's and building's demand, nothing improves
    pools = sum(cluster.pool_slots.values())
    ceiling = max(1, math.ceil((pools + cluster.parallel_buildings * 3) / max(cluster.concurrency, 1)),
                  math.ceil(pools / rates.worker_lanes) if rates.worker_lanes else 1, cluster.workers)
    ceiling = min(max_workers, ceiling)
    floor = total(ceiling)
    out = {"target": target.isoformat(), "start": start.isoformat(), "budget_days": round(budget / 86400, 2),
           "floor_days": round(floor / 86400, 2), "floor_workers": ceiling}
    if floor > budget:
        return {**out, "feasible": False, "workers": None,
                "why": f"even with unlimited workers the waves need {floor / 86400:.1f} days (bound by the source "
                       "systems' pools, parallel_buildings or single large verify tasks: see each wave's "
                       "bottleneck): raise those or move the target"}
    lo, hi = 1, ceiling
    while lo < hi:
        mid = (lo + hi) // 2
        if total(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return {**out, "feasible": True, "workers": lo, "days": round(total(lo) / 86400, 2)}


def wave_work_from_plan(plan, mailbox_sizes: Mapping[str, Sequence[tuple[int, int]]], systems: Mapping[str, str]
                        ) -> list[WaveWork]:
    """WaveWork per planned wave: `mailbox_sizes[building] = [(messages, bytes), ...]`,
    `systems[building] = source system`."""
    out = []
    for w in plan.waves:
        out.append(WaveWork(w.number, w.start_date, tuple(
            BuildingWork(b, systems[b], tuple(mailbox_sizes.get(b, ()))) for b in w.buildings)))
    return out


def _t(v) -> float:
    if isinstance(v, int | float):
        return float(v)
    return dt.datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def calibrate(rates: Rates, tasks: Sequence[Mapping], buildings: Mapping[str, BuildingWork], *,
              copy_scale: bool = True) -> tuple[Rates, dict]:
    """The Airflow-side costs measured on a finished wave (the pilot), and (`copy_scale`) the copy
    speed of the real servers relative to the benchmarked per-connection rates.

    `tasks`: the wave's task instances ({dag_id, task_id, queued_when, end_date}, as the REST API
    lists them; building DAG ids end in the building id). Each cost counts from queued to end,
    i.e. includes the wait for a worker process and its start:
    task_overhead_s = median of the tasks that do no mail work (mark_proven, announce, summary);
    preflight_mailbox_s = median of (preflight - overhead) / mailboxes;
    verify_fixed_s = median of (verify - overhead - verify_ratio x the building's modelled copy time);
    copy scale = sum over copy tasks of (queued -> end - overhead) / the modelled connection time of
    their buildings' mailboxes: mailbox_s and message_s are multiplied, bytes_per_s divided by it
    (the shape of the cost comes from the bench, its level from the pilot on the real servers).
    """
    def span(t):
        return _t(t["end_date"]) - _t(t["queued_when"])

    done = [t for t in tasks if t.get("queued_when") and t.get("end_date") and t.get("state") == "success"]
    pure = [span(t) for t in done if t["task_id"] in ("mark_proven", "announce", "summary")]
    if not pure:
        raise ValueError("no finished mark_proven/announce/summary task to measure the overhead on")
    overhead = sorted(pure)[len(pure) // 2]
    bid = {t["dag_id"]: t["dag_id"].rsplit("_", 1)[-1] for t in done}
    pre = [(span(t) - overhead) / max(len(buildings[bid[t["dag_id"]]].mailboxes), 1)
           for t in done if t["task_id"] == "preflight" and bid[t["dag_id"]] in buildings]

    def med(xs):
        return sorted(xs)[len(xs) // 2]

    # copy speed on the real servers: measured copy task time (queued -> end, minus the overhead)
    # over the modelled connection time of the same mailboxes; scales the per-connection costs
    copies = [t for t in done if t["task_id"] == "copy" and bid[t["dag_id"]] in buildings]
    scale = None
    if copy_scale and copies:
        measured = sum(span(t) - overhead for t in copies)
        seen = {bid[t["dag_id"]] for t in copies}
        model = sum(mailbox_seconds(m, n, rates) for b in seen for m, n in buildings[b].mailboxes)
        if measured > 0 and model > 0:
            scale = measured / model
            rates = dataclasses.replace(rates, mailbox_s=rates.mailbox_s * scale, message_s=rates.message_s * scale,
                                        bytes_per_s=rates.bytes_per_s / scale)
    ver = []
    for t in done:
        b = buildings.get(bid[t["dag_id"]])
        if t["task_id"] == "verify" and b is not None:
            work = sum(mailbox_seconds(m, n, rates) for m, n in b.mailboxes)
            ver.append(span(t) - overhead - rates.verify_ratio * work)
    out = dataclasses.replace(rates, task_overhead_s=round(overhead, 2),
                              preflight_mailbox_s=round(max(med(pre), 0.0), 3) if pre else rates.preflight_mailbox_s,
                              verify_fixed_s=round(max(med(ver), 0.0), 1) if ver else rates.verify_fixed_s)
    return out, {"overhead_samples": len(pure), "preflight_samples": len(pre), "verify_samples": len(ver),
                 "copy_samples": len(copies), "copy_scale": None if scale is None else round(scale, 3)}


# -- inputs from the database (used by `mailshift plan --projection`) --------------------------
def read_mailbox_work(conn, sizes=None, default_mailbox_bytes: int | None = None
                      ) -> tuple[dict[str, list[tuple[int, int]]], dict[str, str], dict[str, int]]:
    """Per building the (messages, bytes) of each mailbox, its source system, and how many
    mailboxes' sizes came from where: `ledger` (folder_progress of a copied mailbox: the real
    size), `sizes` (the operator's measured CSV), `estimate` (min(quota, default), 64 KiB per
    message, as the planner estimates)."""
    from mailshift.planning.planner import DEFAULT_MAILBOX_BYTES, estimate_mailbox
    from mailshift.store import inventory as inventory_store

    default_mailbox_bytes = default_mailbox_bytes or DEFAULT_MAILBOX_BYTES
    sizes = sizes or {}
    out: dict[str, list[tuple[int, int]]] = {}
    source = {"ledger": 0, "sizes": 0, "estimate": 0}
    systems = inventory_store.building_source_systems(conn)
    for bid, address, quota, msgs, nbytes in inventory_store.mailbox_size_rows(conn):
        if msgs:
            size, kind = (int(msgs), int(nbytes)), "ledger"
        elif address.lower() in sizes:
            s = sizes[address.lower()]
            size, kind = (s.messages, s.bytes), "sizes"
        else:
            s = estimate_mailbox(quota, default_mailbox_bytes)
            size, kind = (s.messages, s.bytes), "estimate"
        source[kind] += 1
        out.setdefault(bid, []).append(size)
    return out, systems, source


def render(p: Projection, target: dict | None = None, size_sources: dict | None = None,
           calendar: dict | None = None) -> str:
    """Human-readable projection (the `mailshift plan --projection` output)."""
    lines = [f"projection: {p.cluster.workers} worker(s) x {p.cluster.concurrency} slots, pools "
             + ", ".join(f"{k}={v}" for k, v in sorted(p.cluster.pool_slots.items()))
             + f", {p.cluster.parallel_buildings} buildings in parallel per wave",
             f"rates: {p.rates.bytes_per_s / 1e6:.2f} MB/s + {p.rates.message_s * 1000:.1f} ms/message + "
             f"{p.rates.mailbox_s:.2f} s/mailbox per connection"
             + (f", a worker runs {p.rates.worker_lanes:.1f} connections at full speed" if p.rates.worker_lanes else "")
             + f"; {p.rates.task_overhead_s:.1f} s per task; verify {p.rates.verify_ratio:.2f} x copy + "
               f"{p.rates.verify_fixed_s:.0f} s/building"]
    if size_sources:
        lines.append("mailbox sizes: " + ", ".join(f"{v} {k}" for k, v in size_sources.items()))
    lines.append(f"{'wave':>5} {'start':>10} {'bldgs':>6} {'mailboxes':>9} {'GB':>9} {'hours':>8}  bottleneck")
    for w in p.waves:
        t = w.totals
        lines.append(f"{w.number:>5} {w.start_date.isoformat() if w.start_date else '-':>10} {t['buildings']:>6} "
                     f"{t['mailboxes']:>9} {t['bytes'] / 1e9:>9.1f} {w.seconds / 3600:>8.2f}  {w.bottleneck}")
    d = p.to_dict()
    lines.append(f"total copy time back to back: {d['back_to_back_hours']} h ({d['back_to_back_days']} days); "
                 f"on the plan's calendar the last wave's copy ends {d['calendar_end']}")
    if d["waves_longer_than_spacing"]:
        lines.append(f"WARNING: waves {d['waves_longer_than_spacing']} take longer than the {p.days_between} days "
                     "between waves: add workers / pool slots or space the waves out")
    if target:
        if target["feasible"]:
            lines.append(f"target {target['target']}: {target['workers']} worker(s) x {p.cluster.concurrency} slots "
                         f"finish back to back in {target['days']} days (budget {target['budget_days']} days; "
                         f"floor with unlimited workers {target['floor_days']} days)")
        else:
            lines.append(f"target {target['target']}: NOT reachable: {target['why']}")
    if calendar:
        if calendar["feasible"]:
            lines.append(f"plan calendar ({p.days_between} days between waves): {calendar['workers']} worker(s) "
                         f"keep every wave's copy within its spacing (longest wave {calendar['longest_wave_hours']} h)")
        else:
            lines.append(f"plan calendar: NOT reachable: {calendar['why']}")
    return "\n".join(lines)


# -- the cutover night (issue #14) -----------------------------------------------------------------
@dataclass(frozen=True)
class CutoverRates:
    """Per-mailbox costs of the cutover steps, per connection (seconds). Defaults: the lab's
    figures (bench/README.md "Cutover at scale"); measure your own."""
    final_delta_messages: float = 2.0       # messages arriving per mailbox between prestage/delta and final
    probe_s: float = 0.041                  # drain: one STATUS probe of a quiet mailbox (login, LIST, STATUS)
    sample_rate: float = 0.05               # final proof of an unchanged mailbox: share re-read
    changed_share: float = 0.02             # mailboxes with late mail (re-read in full by the final proof)
    quiet_seconds: float = 600.0            # drain quiet window (2 x the old MX TTL of 300 s)


def _spread(work: Mapping[str, float], cluster: Cluster, tasks: int, rates: Rates) -> float:
    """Wall seconds of per-system connection-seconds `work`: each system in parallel on its pool,
    all of them sharing the workers' task slots; plus each task's overhead."""
    slots = cluster.workers * cluster.concurrency
    pools = {s: max(1, cluster.pool_slots.get(s, 1)) for s in work}
    share = min(1.0, slots / max(1, sum(pools.values())))
    per_system = [work[s] / max(1.0, pools[s] * share) for s in work]
    return max(per_system or [0.0]) + math.ceil(tasks / max(1, slots)) * rates.task_overhead_s


def project_cutover(mailboxes: Mapping[str, Sequence[tuple[int, int]]], rates: Rates, cluster: Cluster,
                    cut: CutoverRates = CutoverRates(), *, batch: int = 200, window_hours: float = 6.0) -> dict:
    """The cutover night of one domain: {system: [(messages, bytes) per mailbox]} ->
    approval -> swap (final pass + re-verify, mapped over batches of `batch` mailboxes) and
    swap -> drain quiet (STATUS probes, passes on the changed mailboxes, quiet window, incremental
    final proof), and the workers needed for approval -> swap to fit `window_hours`."""
    def night(cl: Cluster) -> dict:
        n = {s: len(v) for s, v in mailboxes.items()}
        tasks = sum(-(-k // batch) for k in n.values())
        delta = cut.final_delta_messages
        final = {s: n[s] * (rates.mailbox_s + delta * rates.message_s) for s in n}
        reverify = {s: rates.verify_ratio * sum(rates.mailbox_s + m * rates.message_s + b / rates.bytes_per_s
                                                for m, b in v) for s, v in mailboxes.items()}
        drain_round = {s: n[s] * cut.probe_s + n[s] * cut.changed_share * (rates.mailbox_s + rates.message_s)
                       for s in n}
        proof = {s: sum((rates.verify_ratio * (rates.mailbox_s + m * rates.message_s + b / rates.bytes_per_s))
                        if i % max(1, round(1 / max(cut.changed_share, 1e-9))) == 0 else
                        rates.mailbox_s + cut.sample_rate * m * rates.message_s
                        + cut.sample_rate * b / rates.bytes_per_s for i, (m, b) in enumerate(v))
                 for s, v in mailboxes.items()}
        parts = {"final_pass_s": _spread(final, cl, tasks, rates), "reverify_s": _spread(reverify, cl, tasks, rates),
                 "drain_round_s": _spread(drain_round, cl, 0, rates), "quiet_window_s": cut.quiet_seconds,
                 "final_proof_s": _spread(proof, cl, tasks, rates)}
        parts["approval_to_swap_s"] = parts["final_pass_s"] + parts["reverify_s"]
        parts["swap_to_drain_quiet_s"] = parts["drain_round_s"] + parts["quiet_window_s"]
        parts["swap_to_final_proof_s"] = parts["swap_to_drain_quiet_s"] + parts["final_proof_s"]
        return {k: round(v, 1) for k, v in parts.items()}

    got = night(cluster)
    need = None
    for w in range(1, 257):
        if night(cluster.with_workers(w))["approval_to_swap_s"] <= window_hours * 3600:
            need = w
            break
    return {"mailboxes": sum(len(v) for v in mailboxes.values()), "cluster": cluster.to_dict(),
            "rates": rates.to_dict(), "cutover_rates": dataclasses.asdict(cut), "batch": batch, "night": got,
            "window_hours": window_hours, "workers_for_window": need,
            "note": None if need else "no worker count fits: the source pools bind (raise pool slots)"}
