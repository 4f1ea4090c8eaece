"""The progress summary tables (migrations 0006, 0007) and every read of the operator UI.

Maintenance: `refresh_changed(conn)` is incremental and idempotent: it re-summarises every
mailbox whose pass, proof or waivers changed since the last watermark (with an overlap margin
for transactions that were in flight), every mailbox with a running pass, then their buildings,
and records one `progress_sample` per wave when the last one is older than `sample_every`
seconds. Concurrent callers are serialised by an advisory lock (a second caller returns at once).
`rebuild_all(conn)` recomputes everything set-based (first deployment, the bench). The proof
state of each re-summarised mailbox comes from `rules.proof.proof_states` (the one definition),
computed in Python and written to `mailbox_progress.proof_state`.

Reads (the UI's and the CLI mirrors'): `overview_rows`, `buildings`, `building_rows`,
`find_households`, `household_rows`. They return rows (dicts); `mailshift.progress.queries`
shapes them. The overview reads only the summary tables (thousands of rows), never `message`.
"""

from __future__ import annotations

import time

import psycopg2.extras

from mailshift.rules import proof as proof_rules
from mailshift.rules import states as rs

LOCK_KEY = 0x6D73_7072  # "mspr"
OVERLAP = "2 minutes"     # re-read changes this far behind the watermark (in-flight commits)
BATCH = 200
REBUILD_BATCH = 2000      # proof states computed per call by rebuild_all


def _ids(cur, sql, params=()) -> list:
    cur.execute(sql, params)
    return [r[0] for r in cur.fetchall()]


def proof_state_of(conn, mailbox_ids, batch: int = BATCH) -> dict[int, str]:
    """{mailbox id: proof state} from rules.proof, `batch` mailboxes per call."""
    ids = list(mailbox_ids)
    out: dict[int, str] = {}
    for i in range(0, len(ids), batch):
        for ps in proof_rules.proof_states(conn, mailbox_ids=ids[i:i + batch]):
            out[ps.mailbox_id] = ps.state
    return out


def _write_proof_states(cur, found: dict[int, str]) -> None:
    if found:
        cur.execute("UPDATE mailbox_progress mp SET proof_state = s.state"
                    " FROM unnest(%s::int[], %s::text[]) AS s(mailbox_id, state)"
                    " WHERE mp.mailbox_id = s.mailbox_id AND mp.proof_state IS DISTINCT FROM s.state",
                    (list(found), list(found.values())))


def refresh_mailboxes(conn, mailbox_ids) -> set[str]:
    """Re-summarise these mailboxes (counts, passes, proof state) and their buildings; returns
    the building ids."""
    ids = sorted(set(int(i) for i in mailbox_ids))
    buildings: set[str] = set()
    for i in range(0, len(ids), BATCH):
        chunk = ids[i:i + BATCH]
        found = proof_state_of(conn, chunk)     # before the write: rules.proof reads in its own transaction
        with conn, conn.cursor() as cur:
            cur.execute("SELECT refresh_mailbox_progress(x) FROM unnest(%s::int[]) x", (chunk,))
            _write_proof_states(cur, found)
            cur.execute("SELECT DISTINCT building_id FROM mailbox_progress WHERE mailbox_id = ANY(%s)", (chunk,))
            buildings.update(r[0] for r in cur.fetchall())
    refresh_buildings(conn, buildings)
    return buildings


def refresh_buildings(conn, building_ids) -> None:
    ids = sorted(set(building_ids))
    for i in range(0, len(ids), BATCH):
        with conn, conn.cursor() as cur:
            cur.execute("SELECT refresh_building_progress(x) FROM unnest(%s::text[]) x", (ids[i:i + BATCH],))


def _ensure_buildings(cur) -> int:
    """A building_progress row (with its inventory mailbox count) for every building."""
    cur.execute(
        """
        INSERT INTO building_progress (building_id, mailboxes)
        SELECT b.id, (SELECT count(*) FROM mailbox_scope s WHERE s.building_id = b.id)
        FROM building b WHERE NOT EXISTS (SELECT 1 FROM building_progress bp WHERE bp.building_id = b.id)
        """)
    return cur.rowcount


def take_sample(conn, *, force: bool = False, sample_every: float = 60.0) -> bool:
    """Record cumulative copied messages/bytes per wave, at most once per `sample_every` s."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT last_sample_at, now() FROM progress_state WHERE id = 1 FOR UPDATE")
        last, now = cur.fetchone()
        if not force and last is not None and (now - last).total_seconds() < sample_every:
            return False
        cur.execute(
            """
            INSERT INTO progress_sample (wave_id, sampled_at, messages, bytes, mailboxes_copied, mailboxes_proven)
            SELECT b.wave_id, now(), sum(bp.messages_copied), sum(bp.bytes_copied),
                   sum(bp.mailboxes_copied), sum(bp.mailboxes_proven)
            FROM building_progress bp JOIN building b ON b.id = bp.building_id
            WHERE b.wave_id IS NOT NULL GROUP BY b.wave_id
            ON CONFLICT (wave_id, sampled_at) DO NOTHING
            """)
        cur.execute("UPDATE progress_state SET last_sample_at = now() WHERE id = 1")
    return True


def backfill_samples(conn, points: int = 48) -> int:
    """When no sample exists yet: reconstruct each wave's curve from finished passes
    (cumulative `counters.copied` / `counters.bytes` by finish time)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM progress_sample)")
        if cur.fetchone()[0]:
            return 0
        cur.execute(
            """
            WITH p AS (
                SELECT b.wave_id, p.finished_at,
                       coalesce((p.counters ->> 'copied')::bigint, 0) AS msgs,
                       coalesce((p.counters ->> 'bytes')::bigint, 0) AS bytes
                FROM pass p JOIN mailbox_scope b ON b.mailbox_id = p.mailbox_id
                WHERE p.status = 'finished' AND b.wave_id IS NOT NULL),
            span AS (SELECT min(finished_at) AS t0,
                            greatest(extract(epoch FROM max(finished_at) - min(finished_at)), 1) AS secs
                     FROM p),
            bucketed AS (
                SELECT p.wave_id,
                       span.t0 + ceil(extract(epoch FROM p.finished_at - span.t0) / (span.secs / %s))
                                 * (span.secs / %s) * interval '1 second' AS at,
                       sum(p.msgs) AS msgs, sum(p.bytes) AS bytes
                FROM p, span GROUP BY 1, 2)
            INSERT INTO progress_sample (wave_id, sampled_at, messages, bytes, source)
            SELECT wave_id, at, sum(msgs) OVER w, sum(bytes) OVER w, 'backfill'
            FROM bucketed WINDOW w AS (PARTITION BY wave_id ORDER BY at)
            ON CONFLICT DO NOTHING
            """, (points, points))
        return cur.rowcount


#: every mailbox a summary row is kept for: copied, verified or waived at least once
_SUMMARISED = "SELECT mailbox_id FROM pass UNION SELECT mailbox_id FROM proof UNION SELECT mailbox_id FROM waiver"
#: mailboxes whose summary may have changed since the watermark: a pass updated (or running), a
#: proof recorded, a waiver approved or revoked (each changes the proof state)
_CHANGED = f"""
    SELECT mailbox_id FROM pass WHERE updated_at > %(wm)s - interval '{OVERLAP}'
    UNION SELECT mailbox_id FROM pass WHERE status = 'running'
    UNION SELECT mailbox_id FROM proof WHERE proven_at > %(wm)s - interval '{OVERLAP}'
    UNION SELECT mailbox_id FROM waiver
          WHERE greatest(approved_at, revoked_at, updated_at) > %(wm)s - interval '{OVERLAP}'
"""


def refresh_changed(conn, *, sample_every: float = 60.0, full: bool = False) -> dict | None:
    """Incremental refresh. Returns stats, or None when another refresher holds the lock."""
    t0 = time.monotonic()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        if not cur.fetchone()[0]:
            return None
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT watermark, clock_timestamp() FROM progress_state WHERE id = 1")
            watermark, started = cur.fetchone()
            new_buildings = _ensure_buildings(cur)
            if watermark is None or full:
                ids = _ids(cur, _SUMMARISED)
            else:
                ids = _ids(cur, _CHANGED, {"wm": watermark})
        buildings = refresh_mailboxes(conn, ids)
        if new_buildings and watermark is None:
            with conn, conn.cursor() as cur:
                buildings |= set(_ids(cur, "SELECT building_id FROM building_progress"))
            refresh_buildings(conn, buildings)
        backfilled = backfill_samples(conn)
        sampled = take_sample(conn, sample_every=sample_every, force=bool(ids) and watermark is None)
        stats = {"mailboxes": len(ids), "buildings": len(buildings), "new_buildings": new_buildings,
                 "backfilled_samples": backfilled, "sampled": sampled,
                 "seconds": round(time.monotonic() - t0, 3)}
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE progress_state SET watermark = %s, last_refresh_at = now(), last_stats = %s"
                        " WHERE id = 1", (started, psycopg2.extras.Json(stats)))
        return stats
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


_REBUILD_MAILBOXES = """
INSERT INTO mailbox_progress (mailbox_id, building_id, n_intent, n_copied, n_refused, n_failed,
    n_expunged, n_altered, bytes_copied, src_messages, passes, running, last_pass_kind, last_pass_status,
    first_finished_at, last_finished_at, proof_verdict, proof_kind, proven_at, proof_state)
WITH ids AS (""" + _SUMMARISED + """),
l AS (
    SELECT mailbox_id,
           count(*) FILTER (WHERE state = 0) AS n_intent,
           count(*) FILTER (WHERE state = 1) AS n_copied,
           count(*) FILTER (WHERE state = 2) AS n_refused,
           count(*) FILTER (WHERE state = 3) AS n_failed,
           count(*) FILTER (WHERE state = 4) AS n_expunged,
           count(*) FILTER (WHERE state = 5) AS n_altered,
           coalesce(sum(size) FILTER (WHERE state = 1), 0) AS bytes_copied
    FROM message GROUP BY mailbox_id),
pc AS (
    SELECT mailbox_id, count(*) AS n, bool_or(status = 'running') AS running,
           min(finished_at) FILTER (WHERE status = 'finished') AS first_finished,
           max(finished_at) FILTER (WHERE status = 'finished') AS last_finished
    FROM pass GROUP BY mailbox_id),
lp AS (SELECT DISTINCT ON (mailbox_id) mailbox_id, kind, status FROM pass
       ORDER BY mailbox_id, started_at DESC, id DESC),
lf AS (SELECT DISTINCT ON (mailbox_id) mailbox_id,
              (counters ->> 'source_messages')::int AS src_messages
       FROM pass WHERE status = 'finished' ORDER BY mailbox_id, started_at DESC, id DESC),
pr AS (SELECT DISTINCT ON (mailbox_id) mailbox_id, verdict, kind, proven_at FROM proof
       ORDER BY mailbox_id, proven_at DESC, id DESC),
st AS (SELECT * FROM unnest(%s::int[], %s::text[]) AS st(mailbox_id, state))
SELECT ids.mailbox_id, s.building_id, coalesce(l.n_intent, 0), coalesce(l.n_copied, 0),
       coalesce(l.n_refused, 0), coalesce(l.n_failed, 0), coalesce(l.n_expunged, 0), coalesce(l.n_altered, 0),
       coalesce(l.bytes_copied, 0), lf.src_messages, coalesce(pc.n, 0), coalesce(pc.running, false),
       lp.kind, lp.status, pc.first_finished, pc.last_finished, pr.verdict, pr.kind, pr.proven_at, st.state
FROM ids JOIN mailbox_scope s ON s.mailbox_id = ids.mailbox_id
LEFT JOIN pc ON pc.mailbox_id = ids.mailbox_id
LEFT JOIN l ON l.mailbox_id = ids.mailbox_id
LEFT JOIN lp ON lp.mailbox_id = ids.mailbox_id
LEFT JOIN lf ON lf.mailbox_id = ids.mailbox_id
LEFT JOIN pr ON pr.mailbox_id = ids.mailbox_id
LEFT JOIN st ON st.mailbox_id = ids.mailbox_id
"""

_REBUILD_BUILDINGS = """
INSERT INTO building_progress (building_id, mailboxes, mailboxes_started, mailboxes_copied,
    mailboxes_running, mailboxes_proven, mailboxes_waived, mailboxes_failed, messages_copied, bytes_copied,
    messages_unsettled, messages_refused, messages_altered, src_messages, last_activity_at)
WITH inv AS (SELECT building_id, count(*) AS n FROM mailbox_scope GROUP BY 1),
mp AS (SELECT building_id,
              count(*) FILTER (WHERE passes > 0) AS started,
              count(*) FILTER (WHERE first_finished_at IS NOT NULL AND n_intent = 0
                                 AND n_failed = 0) AS copied,
              count(*) FILTER (WHERE running) AS running,
              count(*) FILTER (WHERE proof_state IN ('proven', 'waived')) AS proven,
              count(*) FILTER (WHERE proof_state = 'waived') AS waived,
              count(*) FILTER (WHERE proof_state = 'not_proven' AND proof_verdict = 'failed') AS failed,
              sum(n_copied) AS msgs, sum(bytes_copied) AS bytes,
              sum(n_intent + n_refused + n_failed) AS unsettled, sum(n_refused) AS refused,
              sum(n_altered) AS altered, sum(src_messages) AS src,
              greatest(max(last_finished_at), max(proven_at)) AS last_at
       FROM mailbox_progress GROUP BY building_id)
SELECT b.id, coalesce(inv.n, 0), coalesce(mp.started, 0), coalesce(mp.copied, 0),
       coalesce(mp.running, 0), coalesce(mp.proven, 0), coalesce(mp.waived, 0), coalesce(mp.failed, 0),
       coalesce(mp.msgs, 0), coalesce(mp.bytes, 0), coalesce(mp.unsettled, 0),
       coalesce(mp.refused, 0), coalesce(mp.altered, 0), coalesce(mp.src, 0), mp.last_at
FROM building b LEFT JOIN inv ON inv.building_id = b.id LEFT JOIN mp ON mp.building_id = b.id
"""


def rebuild_all(conn) -> dict:
    """Recompute every summary row set-based (one GROUP BY over the whole ledger); the proof
    states are computed first (rules.proof, REBUILD_BATCH mailboxes per call), so the tables are
    replaced in one short transaction."""
    t0 = time.monotonic()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT clock_timestamp()")
        started = cur.fetchone()[0]    # anything changing from here on is re-read by the next refresh
        ids = _ids(cur, _SUMMARISED)
    found = proof_state_of(conn, ids, REBUILD_BATCH)
    with conn, conn.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '256MB'")
        cur.execute("TRUNCATE mailbox_progress, building_progress")
        cur.execute(_REBUILD_MAILBOXES, (list(found), list(found.values())))
        mailboxes = cur.rowcount
        cur.execute(_REBUILD_BUILDINGS)
        buildings = cur.rowcount
        cur.execute("UPDATE progress_state SET watermark = %s, last_refresh_at = now() WHERE id = 1", (started,))
    backfilled = backfill_samples(conn)
    take_sample(conn, force=True)
    return {"mailboxes": mailboxes, "buildings": buildings, "backfilled_samples": backfilled,
            "seconds": round(time.monotonic() - t0, 1)}


# -- reads of the operator UI -------------------------------------------------------------------
def _rows(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _one(cur) -> dict | None:
    rows = _rows(cur)
    return rows[0] if rows else None


#: a building's state (rules.states vocabulary), from its summary row and its domain's MX swap
BUILDING_STATES = rs.BUILDING_STATES
CUT_OVER_SQL = ("SELECT DISTINCT domain FROM dns_change WHERE kind = 'mx_swap' "
                "AND status IN ('applied', 'verified')")
BUILDING_STATE_SQL = f"""
    CASE WHEN cut.domain IS NOT NULL THEN '{rs.Progress.CUT_OVER}'
         WHEN coalesce(bp.mailboxes, 0) = 0 THEN '{rs.Progress.EMPTY}'
         WHEN bp.mailboxes_proven >= bp.mailboxes THEN '{rs.Progress.PROVEN}'
         WHEN bp.mailboxes_copied >= bp.mailboxes THEN '{rs.Progress.COPIED}'
         WHEN bp.mailboxes_started > 0 THEN '{rs.Progress.COPYING}'
         ELSE '{rs.Progress.PLANNED}' END
"""
#: open exceptions per building: raised on the building or on one of its mailboxes (a few rows,
#: read through the partial indexes of 0001)
_EXCEPTIONS_BY_BUILDING = """
    SELECT coalesce(e.building_id, s.building_id) AS building_id, count(*) AS n,
           count(*) FILTER (WHERE e.severity = 'blocking') AS blocking
    FROM exception e LEFT JOIN mailbox_scope s ON e.building_id IS NULL AND s.mailbox_id = e.mailbox_id
    WHERE e.status IN ('open', 'acknowledged') AND (e.building_id IS NOT NULL OR e.mailbox_id IS NOT NULL)
    GROUP BY 1
"""
#: every building with its state and summary figures: thousands of rows from building,
#: building_progress and the exceptions, never the ledger (the overview, waves, domains, the map)
BUILDING_FACTS = f"""
WITH cut AS ({CUT_OVER_SQL}), exc AS ({_EXCEPTIONS_BY_BUILDING})
SELECT b.id, b.name, b.domain, b.source_system, b.wave_id, {BUILDING_STATE_SQL} AS state,
       coalesce(bp.mailboxes, 0) AS mailboxes,
       coalesce(bp.mailboxes_started, 0) AS mailboxes_started,
       coalesce(bp.mailboxes_copied, 0) AS mailboxes_copied,
       coalesce(bp.mailboxes_proven, 0) AS mailboxes_proven,
       coalesce(bp.mailboxes_waived, 0) AS mailboxes_waived,
       coalesce(bp.mailboxes_failed, 0) AS mailboxes_failed,
       coalesce(bp.mailboxes_running, 0) AS mailboxes_running,
       coalesce(bp.messages_copied, 0) AS messages_copied,
       coalesce(bp.bytes_copied, 0) AS bytes_copied,
       coalesce(bp.messages_unsettled, 0) AS messages_unsettled,
       coalesce(bp.messages_refused, 0) AS messages_refused,
       coalesce(bp.messages_altered, 0) AS messages_altered,
       coalesce(exc.n, 0) AS open_exceptions,
       coalesce(exc.blocking, 0) AS open_blocking_exceptions,
       -- measured once every mailbox of the building has been copied, else the
       -- planner's estimate (never below what is already copied)
       CASE WHEN bp.mailboxes > 0 AND bp.mailboxes_copied >= bp.mailboxes
            THEN greatest(bp.src_messages, bp.messages_copied + bp.messages_unsettled)
            ELSE greatest(coalesce(b.est_messages, 0), coalesce(bp.src_messages, 0),
                          coalesce(bp.messages_copied, 0)) END AS messages_total,
       CASE WHEN bp.mailboxes > 0 AND bp.mailboxes_copied >= bp.mailboxes
            THEN bp.bytes_copied
            ELSE greatest(coalesce(b.est_bytes, 0), coalesce(bp.bytes_copied, 0)) END AS bytes_total,
       b.est_bytes IS NULL AS no_estimate
FROM building b
LEFT JOIN building_progress bp ON bp.building_id = b.id
LEFT JOIN cut ON cut.domain = b.domain
LEFT JOIN exc ON exc.building_id = b.id
"""
#: the figures summed per wave / domain / overall (with the count of buildings per state)
SUMMED = ("mailboxes", "mailboxes_copied", "mailboxes_proven", "mailboxes_waived", "mailboxes_failed",
          "mailboxes_running", "messages_copied", "bytes_copied", "messages_unsettled", "messages_refused",
          "messages_altered", "open_exceptions", "open_blocking_exceptions", "messages_total", "bytes_total")


def _cells_sql(key: str, where: str = "") -> str:
    sums = ", ".join(f"sum({k}) AS {k}" for k in SUMMED)
    return (f"WITH f AS ({BUILDING_FACTS}) SELECT {key}, state, count(*) AS buildings, {sums}, "
            f"count(*) FILTER (WHERE no_estimate) AS no_estimate FROM f{where} GROUP BY {key}, state")


_OVERVIEW_CELLS = _cells_sql("wave_id")
_DOMAIN_CELLS = _cells_sql("domain")
_ONE_DOMAIN_CELLS = _cells_sql("domain", " WHERE domain = %(domain)s")

# throughput now: passes finished in the window (index pass_updated_idx)
_THROUGHPUT = """
SELECT coalesce(sum((counters ->> 'copied')::bigint), 0),
       coalesce(sum((counters ->> 'bytes')::bigint), 0), count(*)
FROM pass WHERE updated_at >= now() - %(window)s * interval '1 minute'
  AND status = 'finished' AND finished_at >= now() - %(window)s * interval '1 minute'
"""

# chart series: at most `points`+1 points per wave, each "the latest sample at or before the
# tick" (one PK probe each), so the cost does not grow with the number of samples
_SAMPLES = """
WITH span AS (SELECT greatest(min(sampled_at), now() - %(days)s * interval '1 day') AS t0,
                     max(sampled_at) AS t1 FROM progress_sample),
ticks AS (SELECT t0 + (t1 - t0) * i / %(points)s::float8 AS at FROM span,
          generate_series(0, %(points)s) i WHERE t1 IS NOT NULL
          UNION SELECT now() - %(recent)s * interval '1 minute')
SELECT DISTINCT w.id, s.sampled_at, s.messages, s.bytes
FROM wave w CROSS JOIN ticks
CROSS JOIN LATERAL (SELECT sampled_at, messages, bytes FROM progress_sample ps
                    WHERE ps.wave_id = w.id AND ps.sampled_at <= ticks.at
                    ORDER BY sampled_at DESC LIMIT 1) s
ORDER BY 1, 2
"""


def overview_rows(conn, *, throughput_minutes: int, recent_minutes: int, horizon_days: int,
                  chart_points: int) -> dict:
    """Everything the overview shows, read in one transaction from the summary tables:
    now, cells (per wave and building state: building_progress sums), waves (wave rows),
    open_exceptions / open_blocking, throughput (messages, bytes, passes finished in the last
    `throughput_minutes`), running_passes, samples ([(wave id, at, messages, bytes)]: the chart
    series, plus the sample `recent_minutes` ago) and state (watermark, last_refresh_at, last_stats)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        out = {"now": cur.fetchone()[0]}
        cur.execute(_OVERVIEW_CELLS)
        out["cells"] = _rows(cur)
        cur.execute("SELECT id, name, status, kind, planned_start, totals FROM wave ORDER BY id")
        out["waves"] = _rows(cur)
        cur.execute("SELECT count(*), count(*) FILTER (WHERE severity = 'blocking') FROM exception"
                    " WHERE status IN ('open', 'acknowledged')")
        out["open_exceptions"], out["open_blocking"] = cur.fetchone()
        cur.execute(_THROUGHPUT, {"window": throughput_minutes})
        out["throughput"] = cur.fetchone()
        cur.execute("SELECT count(*) FROM pass WHERE status = 'running'")
        out["running_passes"] = cur.fetchone()[0]
        cur.execute(_SAMPLES, {"days": horizon_days, "points": chart_points, "recent": recent_minutes})
        out["samples"] = cur.fetchall()
        cur.execute("SELECT watermark, last_refresh_at, last_stats FROM progress_state WHERE id = 1")
        out["state"] = cur.fetchone() or (None, None, None)
    return out


def _facts_where(wave, system, domain, state) -> tuple[str, dict]:
    """The WHERE clause of a building_facts read and its parameters (None: no filter;
    wave 0 selects the buildings in no wave)."""
    conds, params = [], {"wave": wave, "system": system, "domain": domain, "state": state}
    if wave is not None:
        conds.append("wave_id IS NULL" if wave == 0 else "wave_id = %(wave)s")
    for key, col in (("system", "source_system"), ("domain", "domain"), ("state", "state")):
        if params[key] is not None:
            conds.append(f"{col} = %({key})s")
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


def building_facts(conn, *, wave: int | None = None, system: str | None = None, domain: str | None = None,
                   state: str | None = None, columns: tuple[str, ...] | None = None,
                   limit: int | None = None) -> list[dict]:
    """Buildings with their state and summary figures (BUILDING_FACTS), filtered, ordered by
    wave and id; `columns` narrows the row (the map reads only what it draws)."""
    where, params = _facts_where(wave, system, domain, state)
    cols = ", ".join(columns) if columns else "*"
    params["limit"] = limit
    with conn, conn.cursor() as cur:
        cur.execute(f"WITH f AS ({BUILDING_FACTS}) SELECT {cols} FROM f{where}"
                    " ORDER BY wave_id NULLS LAST, id LIMIT %(limit)s", params)
        return _rows(cur)


def buildings(conn, state: str | None = None, limit: int = 2000) -> list[dict]:
    """Buildings (optionally in one state) with their summary figures."""
    return building_facts(conn, state=state, limit=limit)


def summary_state(conn) -> dict:
    """now and when the summaries were last refreshed (None: never, the first is being computed)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT now() AS as_of, last_refresh_at AS summary_refreshed_at FROM progress_state WHERE id = 1")
        return _one(cur)


def map_filters(conn) -> dict:
    """What the building map can be filtered by: waves (id, name) and source systems."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, name FROM wave ORDER BY id")
        waves = _rows(cur)
        cur.execute("SELECT id FROM source_system ORDER BY id")
        systems = [r[0] for r in cur.fetchall()]
    return {"waves": waves, "systems": systems}


def wave_meta(conn, wave_id: int) -> dict | None:
    """One wave's row (id, name, stored status, kind, planned start, planned totals)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, status, kind, planned_start, totals FROM wave WHERE id = %s", (wave_id,))
        return _one(cur)


def domain_cells(conn, domain: str | None = None) -> list[dict]:
    """Per domain and building state: the buildings and their summed figures."""
    with conn, conn.cursor() as cur:
        cur.execute(_DOMAIN_CELLS if domain is None else _ONE_DOMAIN_CELLS, {"domain": domain})
        return _rows(cur)


_DOMAIN_ONLY_EXCEPTIONS = """
SELECT domain, count(*) AS n, count(*) FILTER (WHERE severity = 'blocking') AS blocking FROM exception
WHERE status IN ('open', 'acknowledged') AND building_id IS NULL AND mailbox_id IS NULL AND domain IS NOT NULL
GROUP BY domain
"""

_DOMAIN_SWAPS = """
SELECT id, kind, status, old_rdata, new_rdata, applied_at, verified_at, requested_by, approved_by
FROM dns_change WHERE domain = %s ORDER BY created_at DESC, id DESC LIMIT 20
"""


def domain_extras(conn, domain: str | None = None) -> dict:
    """Open exceptions raised on a domain as a whole ({domain: (n, blocking)}) and, for one
    domain, its MX and TTL changes (newest first)."""
    with conn, conn.cursor() as cur:
        cur.execute(_DOMAIN_ONLY_EXCEPTIONS)
        exc = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        changes = []
        if domain is not None:
            cur.execute(_DOMAIN_SWAPS, (domain,))
            changes = _rows(cur)
    return {"exceptions": exc, "dns_changes": changes}


_BUILDING = f"WITH f AS ({BUILDING_FACTS}) SELECT * FROM f WHERE id = %s"

_BUILDING_MAILBOXES = """
SELECT s.mailbox_id, s.address, s.protocol, s.household_id,
       mp.n_copied, mp.bytes_copied, mp.n_intent, mp.n_refused, mp.n_failed, mp.n_expunged,
       mp.src_messages, lp.kind AS last_pass_kind, lp.status AS last_pass_status,
       lp.started_at AS last_pass_started, lp.finished_at AS last_pass_finished,
       (SELECT count(*) FROM waiver w WHERE w.mailbox_id = s.mailbox_id AND w.revoked_at IS NULL)
           AS active_waivers,
       (SELECT count(*) FROM exception e WHERE e.mailbox_id = s.mailbox_id
          AND e.status IN ('open', 'acknowledged')) AS open_exceptions
FROM mailbox_scope s
LEFT JOIN mailbox_progress mp ON mp.mailbox_id = s.mailbox_id
LEFT JOIN LATERAL (SELECT kind, status, started_at, finished_at FROM pass p
                   WHERE p.mailbox_id = s.mailbox_id ORDER BY started_at DESC, id DESC LIMIT 1) lp ON true
WHERE s.building_id = %s ORDER BY s.address
"""

_BUILDING_EXCEPTIONS = """
SELECT e.id, e.kind, e.severity, e.status, e.summary, e.opened_at, e.resolved_at, e.resolved_by,
       m.address AS mailbox
FROM exception e LEFT JOIN mailbox m ON m.id = e.mailbox_id
WHERE e.building_id = %(b)s
   OR e.mailbox_id IN (SELECT s.mailbox_id FROM mailbox_scope s WHERE s.building_id = %(b)s)
   OR (e.domain = %(domain)s AND e.building_id IS NULL AND e.mailbox_id IS NULL)
ORDER BY (e.status IN ('open', 'acknowledged')) DESC, e.opened_at DESC LIMIT 500
"""

_BUILDING_WAIVERS = """
SELECT w.id, s.address AS mailbox, w.scope, w.folder_id, w.src_uid, w.dest_folder, w.dest_uid,
       w.reason, w.requested_by, w.approved_by, w.approved_at, w.revoked_at, w.revoked_by
FROM waiver w JOIN mailbox_scope s ON s.mailbox_id = w.mailbox_id
WHERE s.building_id = %s ORDER BY w.approved_at DESC LIMIT 500
"""


def building_rows(conn, building_id: str) -> dict | None:
    """One building, read in one transaction: building (its summary row and overview state),
    mailboxes (summary counts, latest pass, active waivers, open exceptions), exceptions, waivers
    and the latest verify runs; None when the building is unknown."""
    with conn, conn.cursor() as cur:
        cur.execute(_BUILDING, (building_id,))
        b = _one(cur)
        if b is None:
            return None
        cur.execute(_BUILDING_MAILBOXES, (building_id,))
        mailboxes = _rows(cur)
        cur.execute(_BUILDING_EXCEPTIONS, {"b": building_id, "domain": b["domain"]})
        exceptions = _rows(cur)
        cur.execute(_BUILDING_WAIVERS, (building_id,))
        waivers = _rows(cur)
        cur.execute("SELECT id, kind, status, started_at, finished_at FROM verify_run"
                    " WHERE scope = 'building' AND scope_id = %s ORDER BY started_at DESC LIMIT 10", (building_id,))
        verify_runs = _rows(cur)
    return {"building": b, "mailboxes": mailboxes, "exceptions": exceptions, "waivers": waivers,
            "verify_runs": verify_runs}


#: normalised text for look-ups (migration 0011 indexes these expressions): NFKC, no spaces, lower case
NORM_NAME = "lower(regexp_replace(normalize(h.contact_name, NFKC), '\\s', '', 'g'))"
NORM_POSTAL = "lower(regexp_replace(normalize(h.postal_address, NFKC), '\\s', '', 'g'))"
PHONE_DIGITS = "regexp_replace(h.phone, '\\D', '', 'g')"


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def find_households(conn, query: str, limit: int = 20, *, norm: str | None = None, digits: str | None = None,
                    prefix: bool = True) -> list[str]:
    """Household ids matching a household id, a mailbox address, a contact name (`norm`: the
    query normalised like NORM_NAME) or a phone number (`digits`), exactly; and with `prefix`,
    the beginning of an address, a contact name or a postal address."""
    parts = ["SELECT id FROM household WHERE id = %(q)s",
             "SELECT household_id FROM mailbox WHERE lower(address) = lower(%(q)s)"]
    if norm:
        parts.append(f"SELECT h.id FROM household h WHERE {NORM_NAME} = %(norm)s")
    if digits:
        parts.append(f"SELECT h.id FROM household h WHERE {PHONE_DIGITS} = %(digits)s")
    if prefix:
        parts.append("(SELECT household_id FROM mailbox WHERE lower(address) LIKE lower(%(like)s)"
                     " ORDER BY lower(address) LIMIT %(limit)s)")
        if norm:
            parts.append(f"(SELECT h.id FROM household h WHERE {NORM_NAME} LIKE %(norm_like)s LIMIT %(limit)s)")
            parts.append(f"(SELECT h.id FROM household h WHERE {NORM_POSTAL} LIKE %(norm_like)s LIMIT %(limit)s)")
    sql = "SELECT DISTINCT x FROM (" + " UNION ALL ".join(parts) + ") AS m(x) LIMIT %(limit)s"
    with conn, conn.cursor() as cur:
        cur.execute(sql, {"q": query, "norm": norm, "digits": digits, "like": _like_prefix(query),
                          "norm_like": _like_prefix(norm or ""), "limit": limit})
        return [r[0] for r in cur.fetchall()]


_HOUSEHOLD = """
WITH cut AS (SELECT domain, max(coalesce(verified_at, applied_at)) AS at FROM dns_change
             WHERE kind = 'mx_swap' AND status IN ('applied', 'verified') GROUP BY domain)
SELECT h.id AS household_id, h.contact_name, h.postal_address, h.phone,
       b.id AS building_id, b.name AS building_name, b.domain, b.wave_id,
       w.planned_start AS wave_start, cut.at AS cutover_at
FROM household h JOIN building b ON b.id = h.building_id
LEFT JOIN wave w ON w.id = b.wave_id LEFT JOIN cut ON cut.domain = b.domain
WHERE h.id = %s
"""

_HOUSEHOLD_MAILBOXES = """
SELECT m.id AS mailbox_id, m.address, m.protocol,
       mp.n_copied AS messages_copied, mp.bytes_copied, mp.src_messages,
       (SELECT min(finished_at) FROM pass p WHERE p.mailbox_id = m.id AND p.status = 'finished')
           AS first_copied_at,
       (SELECT max(finished_at) FROM pass p WHERE p.mailbox_id = m.id AND p.status = 'finished')
           AS last_copied_at,
       (SELECT kind || ' ' || status FROM pass p WHERE p.mailbox_id = m.id
        ORDER BY started_at DESC, id DESC LIMIT 1) AS last_pass,
       (SELECT count(*) FROM exception e WHERE e.mailbox_id = m.id
          AND e.status IN ('open', 'acknowledged')) AS open_exceptions
FROM mailbox m LEFT JOIN mailbox_progress mp ON mp.mailbox_id = m.id
WHERE m.household_id = %s ORDER BY m.address
"""

_HOUSEHOLD_NOTICES = """
SELECT n.id, m.address AS mailbox, n.campaign, n.kind, n.channel, n.status, n.required,
       n.sent_at, n.delivered_at, n.acknowledged_at
FROM notice n LEFT JOIN mailbox m ON m.id = n.mailbox_id
WHERE n.household_id = %s ORDER BY coalesce(n.sent_at, n.created_at), n.id
"""


def household_rows(conn, household_id: str) -> dict | None:
    """One household with its building, wave and MX switch time, plus `mailboxes` (copy figures,
    first/last copied, last pass, open exceptions) and `notices`; None when unknown."""
    with conn, conn.cursor() as cur:
        cur.execute(_HOUSEHOLD, (household_id,))
        h = _one(cur)
        if h is None:
            return None
        cur.execute(_HOUSEHOLD_MAILBOXES, (household_id,))
        h["mailboxes"] = _rows(cur)
        cur.execute(_HOUSEHOLD_NOTICES, (household_id,))
        h["notices"] = _rows(cur)
    return h
