"""Wave plans in PostgreSQL: read the planner's input from the inventory, store a plan.

    with plan_transaction(conn):                      # one transaction + advisory lock
        inp = read_inventory(conn, sizes=...)         # BuildingLoads, started waves, mailboxes
        plan = plan_waves(inp.loads, dataclasses.replace(limits, closed_waves=inp.closed_waves))
        result = store_plan(conn, plan, inp, created_by="alice")

`store_plan` writes `wave` rows (id = wave number), `building.wave_id` + reason + size estimate
and one `wave_plan` row, only where something differs: storing the same plan again changes no
row and adds no `wave_plan` row (`StoreResult.unchanged`). Waves that have started (status other
than 'planned') are never changed by a plan: their buildings come back as `locked_wave` and the
planner keeps them. Planned waves beyond the new plan's last wave are deleted.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from mailshift.planning.planner import (
    DEFAULT_MAILBOX_BYTES,
    DEFAULT_MESSAGE_BYTES,
    BuildingLoad,
    MailboxSize,
    Plan,
    PlanError,
    estimate_mailbox,
)
from mailshift.planning.snapshot import SnapshotBuilding, pool_name

LOCK_NAME = "mailshift.inventory.plan"


class MailboxColumns(NamedTuple):
    ids: list[int]           # sorted
    addresses: list[str]
    protocols: str           # one letter per mailbox: i imap, p pop3


@dataclass
class PlanInput:
    loads: list[BuildingLoad]
    closed_waves: frozenset[int]
    wave_status: dict[int, str]
    systems: dict[str, int]                                   # source system -> max_connections
    names: dict[str, str] = field(default_factory=dict)       # building id -> name
    max_connections: dict[str, int | None] = field(default_factory=dict)  # building spec override
    mailboxes: dict[str, MailboxColumns] = field(default_factory=dict)   # building id -> columns
    sizes_missing: int = 0                                     # mailboxes with an estimated size

    @property
    def by_id(self) -> dict[str, BuildingLoad]:
        return {b.id: b for b in self.loads}


@dataclass(frozen=True)
class StoreResult:
    plan_id: int
    plan_hash: str
    unchanged: bool
    waves_changed: int
    waves_deleted: int
    buildings_changed: int


@contextlib.contextmanager
def plan_transaction(conn):
    """One transaction holding the planner's advisory lock; commits on success."""
    old = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK_NAME,))
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = old


def read_inventory(conn, *, sizes: Mapping[str, MailboxSize] | None = None,
                   default_mailbox_bytes: int = DEFAULT_MAILBOX_BYTES) -> PlanInput:
    """Everything the planner and the snapshot need, in 5 queries (no commit)."""
    sizes = sizes or {}
    with conn.cursor() as cur:
        # the per-building aggregation sorts ~500k rows: in memory, not on disk (this transaction only)
        cur.execute("SELECT set_config('work_mem', '256MB', true), set_config('jit', 'off', true)")
        cur.execute("SELECT id, status FROM wave")
        wave_status = dict(cur.fetchall())
        closed = frozenset(w for w, s in wave_status.items() if s != "planned")
        cur.execute("SELECT id, max_connections FROM source_system")
        systems = dict(cur.fetchall())
        cur.execute("SELECT building_id, count(*) FROM household GROUP BY building_id")
        households = dict(cur.fetchall())
        # one row per building, mailboxes as columns (C-parsed arrays, no per-mailbox Python object);
        # quota_bytes is not in the view mailbox_scope, and the view's building join is not needed
        cur.execute(f"""
            SELECT h.building_id, array_agg(m.id ORDER BY m.id), array_agg(m.address ORDER BY m.id),
                   string_agg(CASE m.protocol WHEN 'pop3' THEN 'p' ELSE 'i' END, '' ORDER BY m.id),
                   sum(least(coalesce(m.quota_bytes, %(d)s), %(d)s)),
                   sum(least(coalesce(m.quota_bytes, %(d)s), %(d)s) / %(msg)s)
                   {", array_agg(m.quota_bytes ORDER BY m.id)" if sizes else ""}
            FROM mailbox m JOIN household h ON h.id = m.household_id
            GROUP BY h.building_id""", {"d": default_mailbox_bytes, "msg": DEFAULT_MESSAGE_BYTES})
        mailboxes: dict[str, MailboxColumns] = {}
        agg: dict[str, tuple[int, int, int]] = {}
        missing = 0
        for row in cur:
            bid, ids, addrs, protos, est_b, est_m = row[:6]
            mailboxes[bid] = MailboxColumns(ids, addrs, protos)
            if not sizes:
                agg[bid] = (len(ids), int(est_b), int(est_m))
                missing += len(ids)
                continue
            nb = nm = 0
            for addr, quota in zip(addrs, row[6], strict=True):
                sz = sizes.get(addr.lower())
                if sz is None:
                    missing += 1
                    sz = estimate_mailbox(quota, default_mailbox_bytes)
                nb += sz.bytes
                nm += sz.messages
            agg[bid] = (len(ids), nb, nm)
        cur.execute("SELECT id, name, domain, source_system, spec, pinned_wave, wave_id FROM building ORDER BY id")
        loads, names, maxc = [], {}, {}
        problems = []
        for bid, name, domain, system, spec, pinned, wave_id in cur.fetchall():
            spec = spec or {}
            try:
                blackout = frozenset(dt.date.fromisoformat(d) for d in spec.get("blackout_dates") or [])
            except (TypeError, ValueError):
                problems.append(f"building {bid}: bad blackout_dates in its spec: {spec.get('blackout_dates')!r}")
                continue
            if pinned is None:
                pinned = spec.get("pinned_wave")
            a = agg.get(bid, (0, 0, 0))
            loads.append(BuildingLoad(bid, domain, system, households.get(bid, 0), a[0], a[1], a[2],
                                      blackout, pinned, wave_id if wave_id in closed else None, name or ""))
            names[bid] = name or ""
            maxc[bid] = spec.get("max_connections")
    if problems:
        raise PlanError(problems)
    return PlanInput(loads, closed, wave_status, systems, names, maxc, mailboxes, missing)


def _copy(cur, table: str, rows: list[tuple]) -> None:
    buf = io.StringIO()
    for r in rows:
        buf.write("\t".join("\\N" if v is None else str(v).replace("\\", "\\\\").replace("\t", "\\t")
                            .replace("\n", "\\n").replace("\r", "\\r") for v in r))
        buf.write("\n")
    buf.seek(0)
    cur.copy_expert(f"COPY {table} FROM STDIN", buf)


def _started_waves(cur, plan: Plan) -> set[int]:
    """Waves that have started (never changed by a plan); PlanError if `plan` moves a building
    into one, i.e. it was made without the started waves closed."""
    cur.execute("SELECT id, status FROM wave")
    status = dict(cur.fetchall())
    started = {n for n, s in status.items() if s != "planned"}
    for w in plan.waves:
        if w.number in started:
            moved_in = [b for b in w.buildings if w.reasons[b].code != "locked"]
            if moved_in:
                raise PlanError([f"wave {w.number} has started ({status[w.number]}); the plan "
                                 f"adds {', '.join(moved_in[:5])}: re-plan with the started waves "
                                 f"closed (read_inventory gives closed_waves)"])
    return started


def _write_waves(cur, plan: Plan) -> int:
    """Upsert the plan's waves where they differ (status is never touched here)."""
    cur.execute("CREATE TEMP TABLE _plan_wave (id int, name text, planned_start date, kind text,"
                " totals jsonb, notes text[]) ON COMMIT DROP")
    for w in plan.waves:
        totals = w.totals.to_dict() | {"by_system": {k: v.to_dict() for k, v in w.totals_by_system.items()}}
        cur.execute("INSERT INTO _plan_wave VALUES (%s, %s, %s, %s, %s, %s)",
                    (w.number, w.name, w.start_date, w.kind, json.dumps(totals, sort_keys=True),
                     list(w.notes)))
    cur.execute("""
        INSERT INTO wave AS w (id, name, planned_start, kind, totals, notes)
        SELECT id, name, planned_start, kind, totals, notes FROM _plan_wave
        ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, planned_start = EXCLUDED.planned_start,
            kind = EXCLUDED.kind, totals = EXCLUDED.totals, notes = EXCLUDED.notes
        WHERE (w.name, w.planned_start, w.kind, w.totals, w.notes)
              IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.planned_start, EXCLUDED.kind,
                                EXCLUDED.totals, EXCLUDED.notes)""")
    return cur.rowcount


def _write_buildings(cur, plan: Plan, loads: Mapping[str, BuildingLoad], started: set[int]) -> int:
    """Each building's wave, reason and size estimate where they differ (COPY: 5,000 rows)."""
    cur.execute("CREATE TEMP TABLE _plan_building (id text, wave int, code text, reason text,"
                " est_bytes bigint, est_messages bigint) ON COMMIT DROP")
    rows = []
    for w in plan.waves:
        for b in w.buildings:
            bl = loads.get(b)
            r = w.reasons[b]
            rows.append((b, w.number, r.code, r.text, bl.bytes if bl else None, bl.messages if bl else None))
    _copy(cur, "_plan_building", rows)
    cur.execute("""
        UPDATE building b SET wave_id = p.wave, wave_reason_code = p.code, wave_reason = p.reason,
               est_bytes = p.est_bytes, est_messages = p.est_messages
        FROM _plan_building p
        WHERE b.id = p.id AND (b.wave_id, b.wave_reason_code, b.wave_reason, b.est_bytes, b.est_messages)
              IS DISTINCT FROM (p.wave, p.code, p.reason, p.est_bytes, p.est_messages)""")
    changed = cur.rowcount
    # buildings the plan does not know (loaded after read_inventory): unplanned again
    cur.execute("""
        UPDATE building b SET wave_id = NULL, wave_reason_code = NULL, wave_reason = NULL
        WHERE b.wave_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM _plan_building p WHERE p.id = b.id)
          AND NOT (b.wave_id = ANY(%s))""", (sorted(started),))
    return changed + cur.rowcount


def _delete_waves_beyond(cur, last: int) -> int:
    """Planned, now empty waves after the plan's last wave."""
    cur.execute("""
        DELETE FROM wave w WHERE w.id > %s AND w.status = 'planned'
          AND NOT EXISTS (SELECT 1 FROM building b WHERE b.wave_id = w.id)""", (last,))
    return cur.rowcount


def _record_plan(cur, plan: Plan, latest: tuple | None, changed: int, created_by: str | None) -> tuple[int, bool]:
    """(plan id, unchanged): a new wave_plan row only when the plan or a row changed."""
    if latest is not None and latest[1] == plan.plan_hash and changed == 0:
        return latest[0], True
    cur.execute("INSERT INTO wave_plan (plan_hash, limits, summary, created_by) VALUES (%s, %s, %s, %s) RETURNING id",
                (plan.plan_hash, json.dumps(plan.limits.to_dict(), sort_keys=True),
                 json.dumps(plan.summary(), sort_keys=True), created_by))
    plan_id = cur.fetchone()[0]
    cur.execute("UPDATE wave SET plan_id = %s WHERE id = ANY(%s) AND plan_id IS DISTINCT FROM %s",
                (plan_id, [w.number for w in plan.waves], plan_id))
    return plan_id, False


def _store(cur, plan: Plan, loads: Mapping[str, BuildingLoad], created_by: str | None) -> StoreResult:
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK_NAME,))
    started = _started_waves(cur, plan)
    cur.execute("SELECT id, plan_hash FROM wave_plan ORDER BY id DESC LIMIT 1")
    latest = cur.fetchone()
    waves_changed = _write_waves(cur, plan)
    buildings_changed = _write_buildings(cur, plan, loads, started)
    waves_deleted = _delete_waves_beyond(cur, len(plan.waves))
    plan_id, unchanged = _record_plan(cur, plan, latest, waves_changed + buildings_changed + waves_deleted,
                                      created_by)
    return StoreResult(plan_id, plan.plan_hash, unchanged, waves_changed, waves_deleted, buildings_changed)


def store_plan(conn, plan: Plan, inp: PlanInput | Mapping[str, BuildingLoad], *,
               created_by: str | None = None, commit: bool = True) -> StoreResult:
    """Write `plan` (waves, building.wave_id/reason/estimates, a wave_plan row) in one
    transaction, changing only what differs. `commit=False` inside `plan_transaction`."""
    loads = inp.by_id if isinstance(inp, PlanInput) else dict(inp)
    old_autocommit = conn.autocommit
    if old_autocommit:
        conn.autocommit = False
    try:
        with conn.cursor() as cur:
            result = _store(cur, plan, loads, created_by)
        if commit:
            conn.commit()
    except BaseException:
        if commit:
            conn.rollback()
        raise
    finally:
        if commit and old_autocommit:
            conn.autocommit = True
    return result


def latest_limits(conn) -> dict | None:
    """The limits of the latest stored plan (a re-plan defaults to them), None if none."""
    with conn.cursor() as cur:
        cur.execute("SELECT limits FROM wave_plan ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
    return row[0] if row else None


def snapshot_buildings(inp: PlanInput, plan: Plan) -> list[SnapshotBuilding]:
    """The snapshot rows for `plan` (in memory: no second read of 500k mailboxes)."""
    out = []
    empty = MailboxColumns([], [], "")
    for bl in sorted(inp.loads, key=lambda b: b.id):
        mb = inp.mailboxes.get(bl.id, empty)
        out.append(SnapshotBuilding.from_columns(
            bl.id, inp.names.get(bl.id, ""), bl.domain, bl.source_system, pool_name(bl.source_system),
            plan.assignment.get(bl.id), inp.max_connections.get(bl.id), mb.ids, mb.addresses, mb.protocols))
    return out


def read_stored_waves(conn) -> list[dict]:
    """The stored waves with their status and building counts (for status pages and tests)."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT w.id, w.name, w.kind, w.planned_start, w.status, w.plan_id, w.totals,
                   (SELECT count(*) FROM building b WHERE b.wave_id = w.id)
            FROM wave w ORDER BY w.id""")
        return [{"number": n, "name": name, "kind": kind, "start_date": start, "status": st,
                 "plan_id": pid, "totals": totals, "buildings": nb}
                for n, name, kind, start, st, pid, totals, nb in cur.fetchall()]


def wave_building_ids(conn, wave_number: int) -> list[str]:
    """The buildings a wave holds, by id."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM building WHERE wave_id = %s ORDER BY id", (wave_number,))
        return [r[0] for r in cur.fetchall()]


def wave_estimated_bytes(conn, wave_number: int) -> int:
    """The planner's size estimate of a wave (sum over its buildings), for its announcement."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(est_bytes), 0) FROM building WHERE wave_id = %s", (wave_number,))
        return int(cur.fetchone()[0])

