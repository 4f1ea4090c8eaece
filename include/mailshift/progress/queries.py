"""Read side of the operator UI and its CLI mirrors (plain Python, no Airflow imports).

Every function takes a psycopg2 connection and returns JSON-able dicts. The overview reads
only the summary tables of migration 0006 (thousands of rows), never `message`; the building
page and the lookup read per-mailbox rows through primary keys / small indexes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mailshift import settings

PROVEN = ("proven", "proven_with_waivers")
THROUGHPUT_WINDOW_MIN = 15   # "throughput now": passes finished in the last 15 minutes
ETA_WINDOW_MIN = 60          # a wave's rate: its samples over the last hour
SAMPLE_HORIZON_DAYS = 30     # chart range
CHART_POINTS = 96


def _rows(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _one(cur) -> dict | None:
    rows = _rows(cur)
    return rows[0] if rows else None


def _i(v) -> int:
    return int(v or 0)


BUILDING_STATE_SQL = """
    CASE WHEN cut.domain IS NOT NULL THEN 'cut_over'
         WHEN coalesce(bp.mailboxes, 0) = 0 THEN 'empty'
         WHEN bp.mailboxes_proven >= bp.mailboxes THEN 'proven'
         WHEN bp.mailboxes_copied >= bp.mailboxes THEN 'copied'
         WHEN bp.mailboxes_started > 0 THEN 'copying'
         ELSE 'pending' END
"""
BUILDING_STATES = ("pending", "copying", "copied", "proven", "cut_over", "empty")
CUT_OVER_SQL = ("SELECT DISTINCT domain FROM dns_change WHERE kind = 'mx_swap' "
                "AND status IN ('applied', 'verified')")


def overview(conn) -> dict:
    """Waves and buildings by state, copied vs total, throughput, ETA per wave, unproven mailboxes,
    open exceptions, and the per-wave progress series for the charts."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
        cur.execute(
            f"""
            WITH cut AS ({CUT_OVER_SQL}),
            b AS (
                SELECT b.wave_id, {BUILDING_STATE_SQL} AS state,
                       coalesce(bp.mailboxes, 0) AS mailboxes,
                       coalesce(bp.mailboxes_copied, 0) AS mailboxes_copied,
                       coalesce(bp.mailboxes_proven, 0) AS mailboxes_proven,
                       coalesce(bp.mailboxes_failed, 0) AS mailboxes_failed,
                       coalesce(bp.mailboxes_running, 0) AS mailboxes_running,
                       coalesce(bp.messages_copied, 0) AS messages_copied,
                       coalesce(bp.bytes_copied, 0) AS bytes_copied,
                       coalesce(bp.messages_unsettled, 0) AS messages_unsettled,
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
                LEFT JOIN cut ON cut.domain = b.domain)
            SELECT wave_id, state, count(*) AS buildings, sum(mailboxes) AS mailboxes,
                   sum(mailboxes_copied) AS mailboxes_copied, sum(mailboxes_proven) AS mailboxes_proven,
                   sum(mailboxes_failed) AS mailboxes_failed, sum(mailboxes_running) AS mailboxes_running,
                   sum(messages_copied) AS messages_copied, sum(bytes_copied) AS bytes_copied,
                   sum(messages_unsettled) AS messages_unsettled, sum(messages_total) AS messages_total,
                   sum(bytes_total) AS bytes_total, count(*) FILTER (WHERE no_estimate) AS no_estimate
            FROM b GROUP BY wave_id, state
            """)
        cells = _rows(cur)
        cur.execute("SELECT id, name, status, kind, planned_start, totals FROM wave ORDER BY id")
        waves_meta = _rows(cur)
        cur.execute("SELECT count(*) FROM exception WHERE status IN ('open', 'acknowledged')")
        open_exceptions = cur.fetchone()[0]
        cur.execute("SELECT count(*) FILTER (WHERE severity = 'blocking') FROM exception"
                    " WHERE status IN ('open', 'acknowledged')")
        open_blocking = cur.fetchone()[0]
        # throughput now: passes finished in the window (index pass_updated_idx)
        cur.execute(
            f"""
            SELECT coalesce(sum((counters ->> 'copied')::bigint), 0),
                   coalesce(sum((counters ->> 'bytes')::bigint), 0), count(*)
            FROM pass WHERE updated_at >= now() - interval '{THROUGHPUT_WINDOW_MIN} minutes'
              AND status = 'finished' AND finished_at >= now() - interval '{THROUGHPUT_WINDOW_MIN} minutes'
            """)
        tp_msgs, tp_bytes, tp_passes = cur.fetchone()
        cur.execute("SELECT count(*) FROM pass WHERE status = 'running'")
        running_passes = cur.fetchone()[0]
        # chart series: at most CHART_POINTS+1 points per wave, each "the latest sample at or before
        # the tick" (one PK probe each), so the cost does not grow with the number of samples
        cur.execute(
            f"""
            WITH span AS (SELECT greatest(min(sampled_at), now() - interval '{SAMPLE_HORIZON_DAYS} days') AS t0,
                                 max(sampled_at) AS t1 FROM progress_sample),
            ticks AS (SELECT t0 + (t1 - t0) * i / {CHART_POINTS}.0 AS at FROM span,
                      generate_series(0, {CHART_POINTS}) i WHERE t1 IS NOT NULL
                      UNION SELECT now() - interval '{ETA_WINDOW_MIN} minutes')
            SELECT DISTINCT w.id, s.sampled_at, s.messages, s.bytes
            FROM wave w CROSS JOIN ticks
            CROSS JOIN LATERAL (SELECT sampled_at, messages, bytes FROM progress_sample ps
                                WHERE ps.wave_id = w.id AND ps.sampled_at <= ticks.at
                                ORDER BY sampled_at DESC LIMIT 1) s
            ORDER BY 1, 2
            """)
        samples = cur.fetchall()
        cur.execute("SELECT watermark, last_refresh_at, last_stats FROM progress_state WHERE id = 1")
        st = cur.fetchone() or (None, None, None)

    series: dict[int, list] = {}
    for wave_id, at, msgs, byts in samples:
        series.setdefault(wave_id, []).append((at, int(msgs), int(byts)))

    waves: dict = {}
    for w in waves_meta:
        waves[w["id"]] = {"wave": w["id"], "name": w["name"], "status": w["status"], "kind": w["kind"],
                          "planned_start": w["planned_start"], "buildings": 0,
                          "buildings_by_state": {s: 0 for s in BUILDING_STATES},
                          "mailboxes": 0, "mailboxes_copied": 0, "mailboxes_proven": 0,
                          "mailboxes_failed": 0, "mailboxes_running": 0, "messages_copied": 0,
                          "messages_total": 0, "bytes_copied": 0, "bytes_total": 0, "messages_unsettled": 0,
                          "buildings_without_estimate": 0, "planned_totals": w["totals"]}
    totals = {"buildings": 0, "buildings_by_state": {s: 0 for s in BUILDING_STATES}, "mailboxes": 0,
              "mailboxes_copied": 0, "mailboxes_proven": 0, "mailboxes_failed": 0, "mailboxes_running": 0,
              "messages_copied": 0, "messages_total": 0, "bytes_copied": 0, "bytes_total": 0,
              "messages_unsettled": 0}
    for c in cells:
        key = c["wave_id"]
        if key not in waves:
            waves[key] = {"wave": key, "name": "unassigned" if key is None else f"wave {key}", "status": "-",
                          "kind": None, "planned_start": None, "buildings": 0,
                          "buildings_by_state": {s: 0 for s in BUILDING_STATES}, "mailboxes": 0,
                          "mailboxes_copied": 0, "mailboxes_proven": 0, "mailboxes_failed": 0,
                          "mailboxes_running": 0, "messages_copied": 0, "messages_total": 0, "bytes_copied": 0,
                          "bytes_total": 0, "messages_unsettled": 0, "buildings_without_estimate": 0,
                          "planned_totals": None}
        w = waves[key]
        w["buildings"] += c["buildings"]
        w["buildings_by_state"][c["state"]] += c["buildings"]
        w["buildings_without_estimate"] += _i(c["no_estimate"])
        totals["buildings"] += c["buildings"]
        totals["buildings_by_state"][c["state"]] += c["buildings"]
        for k in ("mailboxes", "mailboxes_copied", "mailboxes_proven", "mailboxes_failed", "mailboxes_running",
                  "messages_copied", "messages_total", "bytes_copied", "bytes_total", "messages_unsettled"):
            w[k] += _i(c[k])
            totals[k] += _i(c[k])

    window = dt.timedelta(minutes=ETA_WINDOW_MIN)
    for key, w in waves.items():
        pts = series.get(key, [])
        rate = None
        if len(pts) >= 2:
            recent = [p for p in pts if p[0] >= now - window] or pts[-2:]
            first = next((p for p in pts if p[0] >= recent[0][0] - dt.timedelta(seconds=1)), pts[-2])
            if first is pts[-1]:
                first = pts[-2]
            secs = (pts[-1][0] - first[0]).total_seconds()
            if secs > 0:
                rate = max(0.0, (pts[-1][2] - first[2]) / secs)
        remaining = max(0, w["bytes_total"] - w["bytes_copied"])
        w["bytes_per_s"] = rate
        w["unproven_mailboxes"] = w["mailboxes"] - w["mailboxes_proven"]
        if w["mailboxes"] and w["mailboxes_copied"] >= w["mailboxes"]:
            w["eta"], w["eta_note"] = None, "copied"
        elif remaining and rate:
            w["eta"] = now + dt.timedelta(seconds=remaining / rate)
            w["eta_note"] = f"{remaining / rate / 3600:.1f} h at the last hour's rate"
        elif w["mailboxes_copied"] or w["bytes_copied"]:
            w["eta"], w["eta_note"] = None, "stalled (no progress in the last samples)"
        else:
            w["eta"], w["eta_note"] = None, "not started"
        w["series"] = [{"at": p[0], "messages": p[1], "bytes": p[2]} for p in pts]

    # overall throughput history: sum of per-wave deltas between consecutive samples
    hist: dict = {}
    for pts in series.values():
        for a, b in zip(pts, pts[1:], strict=False):
            secs = (b[0] - a[0]).total_seconds()
            if secs > 0:
                hist[b[0]] = hist.get(b[0], 0.0) + max(0, b[2] - a[2]) / secs
    totals["unproven_mailboxes"] = totals["mailboxes"] - totals["mailboxes_proven"]
    totals["open_exceptions"] = open_exceptions
    totals["open_blocking_exceptions"] = open_blocking
    return {
        "as_of": now, "summary_refreshed_at": st[1], "summary_watermark": st[0], "refresh_stats": st[2],
        "totals": totals,
        "throughput": {"window_minutes": THROUGHPUT_WINDOW_MIN, "messages": int(tp_msgs), "bytes": int(tp_bytes),
                       "passes": tp_passes, "bytes_per_s": int(tp_bytes) / (THROUGHPUT_WINDOW_MIN * 60),
                       "messages_per_s": int(tp_msgs) / (THROUGHPUT_WINDOW_MIN * 60),
                       "running_passes": running_passes,
                       "history": [{"at": k, "bytes_per_s": v} for k, v in sorted(hist.items())]},
        "waves": [waves[k] for k in sorted(waves, key=lambda x: (x is None, x or 0))],
    }


def reports_root() -> Path:
    return settings.reports_dir()


def report_path(building_id: str) -> Path | None:
    p = reports_root() / building_id / "latest.html"
    return p if p.is_file() else None


def building_page(conn, building_id: str) -> dict | None:
    """A building: its mailboxes with pass and proof state, exceptions and waivers, the report."""
    with conn, conn.cursor() as cur:
        cur.execute(
            f"""
            WITH cut AS ({CUT_OVER_SQL})
            SELECT b.id, b.name, b.domain, b.source_system, b.wave_id, b.est_bytes, b.est_messages,
                   {BUILDING_STATE_SQL} AS state, bp.mailboxes, bp.mailboxes_copied, bp.mailboxes_proven,
                   bp.mailboxes_failed, bp.mailboxes_running, bp.messages_copied, bp.bytes_copied,
                   bp.messages_unsettled, bp.refreshed_at
            FROM building b LEFT JOIN building_progress bp ON bp.building_id = b.id
            LEFT JOIN cut ON cut.domain = b.domain WHERE b.id = %s
            """, (building_id,))
        b = _one(cur)
        if b is None:
            return None
        cur.execute(
            """
            SELECT m.id AS mailbox_id, m.address, m.protocol, h.id AS household_id,
                   mp.n_copied, mp.bytes_copied, mp.n_intent, mp.n_refused, mp.n_failed, mp.n_expunged,
                   mp.src_messages, lp.kind AS last_pass_kind, lp.status AS last_pass_status,
                   lp.started_at AS last_pass_started, lp.finished_at AS last_pass_finished,
                   pr.verdict AS proof_verdict, pr.kind AS proof_kind, pr.proven_at, pr.verify_run_id,
                   (SELECT count(*) FROM waiver w WHERE w.mailbox_id = m.id AND w.revoked_at IS NULL)
                       AS active_waivers,
                   (SELECT count(*) FROM exception e WHERE e.mailbox_id = m.id
                      AND e.status IN ('open', 'acknowledged')) AS open_exceptions
            FROM household h JOIN mailbox m ON m.household_id = h.id
            LEFT JOIN mailbox_progress mp ON mp.mailbox_id = m.id
            LEFT JOIN LATERAL (SELECT kind, status, started_at, finished_at FROM pass p
                               WHERE p.mailbox_id = m.id ORDER BY started_at DESC, id DESC LIMIT 1) lp ON true
            LEFT JOIN LATERAL (SELECT verdict, kind, proven_at, verify_run_id FROM proof p
                               WHERE p.mailbox_id = m.id ORDER BY proven_at DESC, id DESC LIMIT 1) pr ON true
            WHERE h.building_id = %s ORDER BY m.address
            """, (building_id,))
        mailboxes = _rows(cur)
        cur.execute(
            """
            SELECT e.id, e.kind, e.severity, e.status, e.summary, e.opened_at, e.resolved_at, e.resolved_by,
                   m.address AS mailbox
            FROM exception e LEFT JOIN mailbox m ON m.id = e.mailbox_id
            WHERE e.building_id = %s
               OR e.mailbox_id IN (SELECT m2.id FROM mailbox m2 JOIN household h ON h.id = m2.household_id
                                   WHERE h.building_id = %s)
               OR (e.domain = %s AND e.building_id IS NULL AND e.mailbox_id IS NULL)
            ORDER BY (e.status IN ('open', 'acknowledged')) DESC, e.opened_at DESC LIMIT 500
            """, (building_id, building_id, b["domain"]))
        exceptions = _rows(cur)
        cur.execute(
            """
            SELECT w.id, m.address AS mailbox, w.scope, w.folder_id, w.src_uid, w.dest_folder, w.dest_uid,
                   w.reason, w.requested_by, w.approved_by, w.approved_at, w.revoked_at, w.revoked_by
            FROM waiver w JOIN mailbox m ON m.id = w.mailbox_id JOIN household h ON h.id = m.household_id
            WHERE h.building_id = %s ORDER BY w.approved_at DESC LIMIT 500
            """, (building_id,))
        waivers = _rows(cur)
        cur.execute(
            """
            SELECT id, kind, status, started_at, finished_at FROM verify_run
            WHERE scope = 'building' AND scope_id = %s ORDER BY started_at DESC LIMIT 10
            """, (building_id,))
        verify_runs = _rows(cur)
    rp = report_path(building_id)
    return {"building": b, "mailboxes": mailboxes, "exceptions": exceptions, "waivers": waivers,
            "verify_runs": verify_runs, "report": str(rp) if rp else None}


def _proof_state(conn, mailbox_id: int) -> dict:
    """The verifier's own live verdict (stale ledger, revoked waivers...)."""
    from mailshift.rules.proof import proof_state

    ps = proof_state(conn, mailbox_id)
    return {"state": ps.state, "reasons": list(ps.reasons), "waivers": list(ps.waivers),
            "proven_at": getattr(ps, "proven_at", None), "kind": getattr(ps, "kind", None)}


def lookup(conn, query: str, limit: int = 20) -> dict:
    """Support-desk lookup by mailbox address (exact, or a prefix) or household ID: the household,
    its mailboxes (migrated or not, when, proof state) and the notices sent."""
    q = (query or "").strip()
    if not q:
        return {"query": q, "households": []}
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT DISTINCT household_id FROM (
                SELECT id AS household_id FROM household WHERE id = %s
                UNION ALL SELECT household_id FROM mailbox WHERE lower(address) = lower(%s)
                UNION ALL (SELECT household_id FROM mailbox
                           WHERE lower(address) LIKE lower(%s) || '%%' ORDER BY lower(address) LIMIT %s)) x
            LIMIT %s
            """, (q, q, q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"), limit, limit))
        hids = [r[0] for r in cur.fetchall()]
    households = []
    for hid in sorted(hids):
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                WITH cut AS (SELECT domain, max(coalesce(verified_at, applied_at)) AS at FROM dns_change
                             WHERE kind = 'mx_swap' AND status IN ('applied', 'verified') GROUP BY domain)
                SELECT h.id AS household_id, h.contact_name, h.postal_address, h.phone,
                       b.id AS building_id, b.name AS building_name, b.domain, b.wave_id,
                       w.planned_start AS wave_start, cut.at AS cutover_at
                FROM household h JOIN building b ON b.id = h.building_id
                LEFT JOIN wave w ON w.id = b.wave_id LEFT JOIN cut ON cut.domain = b.domain
                WHERE h.id = %s
                """, (hid,))
            h = _one(cur)
            cur.execute(
                """
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
                """, (hid,))
            mbs = _rows(cur)
            cur.execute(
                """
                SELECT n.id, m.address AS mailbox, n.campaign, n.kind, n.channel, n.status, n.required,
                       n.sent_at, n.delivered_at, n.acknowledged_at
                FROM notice n LEFT JOIN mailbox m ON m.id = n.mailbox_id
                WHERE n.household_id = %s ORDER BY coalesce(n.sent_at, n.created_at), n.id
                """, (hid,))
            notices = _rows(cur)
        for mb in mbs:
            proof = _proof_state(conn, mb["mailbox_id"])
            mb["proof_state"] = proof["state"]
            mb["proof_reasons"] = proof["reasons"]
            mb["proven_at"] = proof["proven_at"]
            mb["migrated"] = bool(mb["first_copied_at"])
        h["mailboxes"] = mbs
        h["notices"] = notices
        households.append(h)
    return {"query": q, "households": households}


REPORT_COLUMNS = ["building_id", "mailbox_id", "address", "household_id", "protocol", "messages_copied",
                  "bytes_copied", "messages_unsettled", "src_messages", "last_pass_kind", "last_pass_status",
                  "last_pass_finished", "proof_verdict", "proof_kind", "proven_at", "active_waivers",
                  "open_exceptions"]


def building_report(conn, building_id: str) -> dict | None:
    """The operator report of one building: a summary and one row per mailbox (CSV/JSON)."""
    page = building_page(conn, building_id)
    if page is None:
        return None
    rows = []
    for m in page["mailboxes"]:
        rows.append({"building_id": building_id, "mailbox_id": m["mailbox_id"], "address": m["address"],
                     "household_id": m["household_id"], "protocol": m["protocol"],
                     "messages_copied": _i(m["n_copied"]), "bytes_copied": _i(m["bytes_copied"]),
                     "messages_unsettled": _i(m["n_intent"]) + _i(m["n_refused"]) + _i(m["n_failed"]),
                     "src_messages": m["src_messages"], "last_pass_kind": m["last_pass_kind"],
                     "last_pass_status": m["last_pass_status"], "last_pass_finished": m["last_pass_finished"],
                     "proof_verdict": m["proof_verdict"], "proof_kind": m["proof_kind"],
                     "proven_at": m["proven_at"], "active_waivers": m["active_waivers"],
                     "open_exceptions": m["open_exceptions"]})
    return {"building": page["building"], "mailboxes": rows,
            "exceptions_open": sum(1 for e in page["exceptions"] if e["status"] in ("open", "acknowledged")),
            "waivers_active": sum(1 for w in page["waivers"] if w["revoked_at"] is None),
            "report": page["report"]}


def dag_runs_for_building(building_id: str) -> dict:
    """DAG ids whose runs belong to a building (the DAG factory's naming; used by the plugin)."""
    return {"building_id": building_id}
