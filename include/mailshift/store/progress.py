"""Maintain the progress summary tables of migration 0006 (no Airflow imports).

`refresh_changed(conn)` is incremental and idempotent: it re-summarises every mailbox whose
pass or proof changed since the last watermark (with an overlap margin for transactions that
were in flight), every mailbox with a running pass, then their buildings, and records one
`progress_sample` per wave when the last one is older than `sample_every` seconds.
Concurrent callers are serialised by an advisory lock (a second caller returns at once).
`rebuild_all(conn)` recomputes everything set-based (first deployment, the bench).
"""

from __future__ import annotations

import time

import psycopg2.extras

LOCK_KEY = 0x6D73_7072  # "mspr"
OVERLAP = "2 minutes"     # re-read changes this far behind the watermark (in-flight commits)
BATCH = 200


def _ids(cur, sql, params=()) -> list:
    cur.execute(sql, params)
    return [r[0] for r in cur.fetchall()]


def refresh_mailboxes(conn, mailbox_ids) -> set[str]:
    """Re-summarise these mailboxes and their buildings; returns the building ids."""
    ids = sorted(set(int(i) for i in mailbox_ids))
    buildings: set[str] = set()
    for i in range(0, len(ids), BATCH):
        chunk = ids[i:i + BATCH]
        with conn, conn.cursor() as cur:
            cur.execute("SELECT refresh_mailbox_progress(x) FROM unnest(%s::int[]) x", (chunk,))
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
        SELECT b.id, (SELECT count(*) FROM mailbox m JOIN household h ON h.id = m.household_id
                      WHERE h.building_id = b.id)
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
                FROM pass p JOIN mailbox m ON m.id = p.mailbox_id
                JOIN household h ON h.id = m.household_id JOIN building b ON b.id = h.building_id
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
                ids = _ids(cur, "SELECT DISTINCT mailbox_id FROM pass")
            else:
                ids = _ids(cur, f"""
                    SELECT mailbox_id FROM pass WHERE updated_at > %s - interval '{OVERLAP}'
                    UNION SELECT mailbox_id FROM pass WHERE status = 'running'
                    UNION SELECT mailbox_id FROM proof WHERE proven_at > %s - interval '{OVERLAP}'
                    UNION SELECT mailbox_id FROM waiver WHERE updated_at > %s - interval '{OVERLAP}'
                    """, (watermark, watermark, watermark))
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


def rebuild_all(conn) -> dict:
    """Recompute every summary row set-based (one GROUP BY over the whole ledger)."""
    t0 = time.monotonic()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT clock_timestamp()")
        started = cur.fetchone()[0]
        cur.execute("SET LOCAL work_mem = '256MB'")
        cur.execute("TRUNCATE mailbox_progress, building_progress")
        cur.execute(
            """
            INSERT INTO mailbox_progress (mailbox_id, building_id, n_intent, n_copied, n_refused, n_failed,
                n_expunged, bytes_copied, src_messages, passes, running, last_pass_kind, last_pass_status,
                first_finished_at, last_finished_at, proof_verdict, proof_kind, proven_at)
            WITH l AS (
                SELECT mailbox_id,
                       count(*) FILTER (WHERE state = 0) AS n_intent,
                       count(*) FILTER (WHERE state = 1) AS n_copied,
                       count(*) FILTER (WHERE state = 2) AS n_refused,
                       count(*) FILTER (WHERE state = 3) AS n_failed,
                       count(*) FILTER (WHERE state = 4) AS n_expunged,
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
                   ORDER BY mailbox_id, proven_at DESC, id DESC)
            SELECT pc.mailbox_id, h.building_id, coalesce(l.n_intent, 0), coalesce(l.n_copied, 0),
                   coalesce(l.n_refused, 0), coalesce(l.n_failed, 0), coalesce(l.n_expunged, 0),
                   coalesce(l.bytes_copied, 0), lf.src_messages, pc.n, pc.running, lp.kind, lp.status,
                   pc.first_finished, pc.last_finished, pr.verdict, pr.kind, pr.proven_at
            FROM pc JOIN mailbox m ON m.id = pc.mailbox_id JOIN household h ON h.id = m.household_id
            LEFT JOIN l ON l.mailbox_id = pc.mailbox_id
            LEFT JOIN lp ON lp.mailbox_id = pc.mailbox_id
            LEFT JOIN lf ON lf.mailbox_id = pc.mailbox_id
            LEFT JOIN pr ON pr.mailbox_id = pc.mailbox_id
            """)
        mailboxes = cur.rowcount
        cur.execute(
            """
            INSERT INTO building_progress (building_id, mailboxes, mailboxes_started, mailboxes_copied,
                mailboxes_running, mailboxes_proven, mailboxes_failed, messages_copied, bytes_copied,
                messages_unsettled, src_messages, last_activity_at)
            WITH inv AS (SELECT h.building_id, count(*) AS n FROM mailbox m
                         JOIN household h ON h.id = m.household_id GROUP BY 1),
            mp AS (SELECT building_id,
                          count(*) FILTER (WHERE passes > 0) AS started,
                          count(*) FILTER (WHERE first_finished_at IS NOT NULL AND n_intent = 0
                                             AND n_failed = 0) AS copied,
                          count(*) FILTER (WHERE running) AS running,
                          count(*) FILTER (WHERE proof_verdict IN ('proven', 'proven_with_waivers')) AS proven,
                          count(*) FILTER (WHERE proof_verdict = 'failed') AS failed,
                          sum(n_copied) AS msgs, sum(bytes_copied) AS bytes,
                          sum(n_intent + n_refused + n_failed) AS unsettled, sum(src_messages) AS src,
                          greatest(max(last_finished_at), max(proven_at)) AS last_at
                   FROM mailbox_progress GROUP BY building_id)
            SELECT b.id, coalesce(inv.n, 0), coalesce(mp.started, 0), coalesce(mp.copied, 0),
                   coalesce(mp.running, 0), coalesce(mp.proven, 0), coalesce(mp.failed, 0),
                   coalesce(mp.msgs, 0), coalesce(mp.bytes, 0), coalesce(mp.unsettled, 0),
                   coalesce(mp.src, 0), mp.last_at
            FROM building b LEFT JOIN inv ON inv.building_id = b.id LEFT JOIN mp ON mp.building_id = b.id
            """)
        buildings = cur.rowcount
        cur.execute("UPDATE progress_state SET watermark = %s, last_refresh_at = now() WHERE id = 1", (started,))
    backfilled = backfill_samples(conn)
    take_sample(conn, force=True)
    return {"mailboxes": mailboxes, "buildings": buildings, "backfilled_samples": backfilled,
            "seconds": round(time.monotonic() - t0, 1)}
