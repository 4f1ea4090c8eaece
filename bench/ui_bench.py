#!/usr/bin/env python3
"""Operator UI benchmark: the progress overview at production scale.

    PYTHONPATH=include python bench/ui_bench.py generate   # ~400k households, ~100M ledger rows
    PYTHONPATH=include python bench/ui_bench.py summarise  # 0006 summary tables from the ledger
    PYTHONPATH=include python bench/ui_bench.py time [--url http://127.0.0.1:14391/mailshift]

`generate` creates database `mailshift_uibench` (or --db-name) in the cluster of --dsn
(default $MAILSHIFT_DB_URL), applies the migrations and fills it with SQL only
(generate_series): 2 source systems, 400 domains, 4,000 buildings in 20 waves,
400,000 households, ~500,000 mailboxes (every 4th household has a second one), 3 folders
and 1-2 passes per started mailbox, and `message` rows for the mailboxes of waves 1-12
(100 + (id*7919 mod 467) rows each, ~100M in total; a few refused/failed/intent rows),
proofs for waves 1-10, some waivers, exceptions and notices. For speed the ledger's
PK / partial index / FKs / trigger are dropped during the load and re-created afterwards
(PK + partial index built, the two composite FKs re-added NOT VALID: the synthetic rows
satisfy them by construction). Every step is timed and printed as JSON.

`summarise` applies pending migrations (0006_progress) and builds the summary tables
from the whole ledger in one go (`mailshift.store.progress.rebuild_all`), timed.

`time` measures the overview: the query (`mailshift.progress.queries.overview`) N times
on a fresh connection, and, with --url and a token, the HTTP page; prints the median. It also
times the building map (issue #16): `queries.building_map` for all buildings, one wave and one
source system, and rendering its HTML (`progress.pages.map_html`).

`http` starts an Airflow api-server with the plugin on the bench database (its own metadata DB
--airflow-db, port --port, background refresh off) and times the pages over HTTP with an
operator's JWT: the map (all / one wave / one system), the overview, the map's JSON.

    PYTHONPATH=include .venv/bin/python bench/ui_bench.py --db-name mailshift_uibench time -n 9
    PYTHONPATH=include .venv/bin/python bench/ui_bench.py --db-name mailshift_uibench http -n 9
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "include"))

N_BUILDINGS = 4000
N_HOUSEHOLDS = 400_000
N_WAVES = 20
N_DOMAINS = 400
COPIED_WAVES = 12      # waves whose mailboxes have ledger rows
PROVEN_WAVES = 10


def _dsn_for(base: str, dbname: str) -> str:
    u = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))


def _run(conn, label, sql, params=None, out=None):
    t = time.monotonic()
    with conn.cursor() as cur:
        cur.execute(sql, params)
        n = cur.rowcount
    conn.commit()
    took = round(time.monotonic() - t, 2)
    print(json.dumps({"step": label, "rows": n, "seconds": took}), flush=True)
    if out is not None:
        out[label] = took
    return n


def generate(args) -> int:
    from mailshift.store import migrate

    base = args.dsn or os.environ["MAILSHIFT_DB_URL"]
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{args.db_name}"')
    admin.close()
    dsn = _dsn_for(base, args.db_name)
    migrate.upgrade(dsn)
    conn = psycopg2.connect(dsn)
    timings: dict = {}
    t0 = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("SET work_mem = '256MB'")
    _run(conn, "inventory", f"""
        INSERT INTO source_system (id, kind, imap_host, imap_port, max_connections, airflow_conn_id)
        VALUES ('alpha', 'dovecot', 'src-a', 143, 40, 'mailshift_src_a'),
               ('beta', 'courier', 'src-b', 143, 20, 'mailshift_src_b');
        INSERT INTO domain (name, mx_ttl)
        SELECT 'd' || i || '.example.jp', 3600 FROM generate_series(1, {N_DOMAINS}) i;
        INSERT INTO wave (id, name, planned_start, status, kind, totals)
        SELECT w, 'wave ' || w, date '2026-01-05' + 7 * w,
               CASE WHEN w <= {PROVEN_WAVES} THEN 'done' WHEN w <= {COPIED_WAVES} THEN 'running'
                    ELSE 'planned' END,
               CASE WHEN w = 1 THEN 'pilot' ELSE 'regular' END, NULL
        FROM generate_series(1, {N_WAVES}) w;
        INSERT INTO building (id, name, domain, source_system, spec, wave_id)
        SELECT 'B' || lpad(i::text, 5, '0'), 'マンション ' || i,
               'd' || (1 + (i - 1) % {N_DOMAINS}) || '.example.jp',
               CASE WHEN i % 3 = 0 THEN 'beta' ELSE 'alpha' END, '{{}}'::jsonb,
               1 + (i - 1) / ({N_BUILDINGS} / {N_WAVES})
        FROM generate_series(1, {N_BUILDINGS}) i;
        INSERT INTO household (id, building_id, contact_name, phone, postal_address)
        SELECT 'H' || lpad(i::text, 6, '0'), 'B' || lpad((1 + (i - 1) / 100)::text, 5, '0'),
               '山田 ' || i, '03-0000-' || lpad((i % 10000)::text, 4, '0'),
               '東京都 ' || (1 + (i - 1) / 100) || '号棟 ' || (i % 100) || '号室'
        FROM generate_series(1, {N_HOUSEHOLDS}) i;
        INSERT INTO mailbox (id, household_id, address, source_login, dest_login, protocol)
        SELECT i, 'H' || lpad(i::text, 6, '0'),
               'u' || i || '@d' || (1 + ((1 + (i - 1) / 100) - 1) % {N_DOMAINS}) || '.example.jp',
               'u' || i, 'u' || i, CASE WHEN i % 7 = 0 THEN 'pop3' ELSE 'imap' END
        FROM generate_series(1, {N_HOUSEHOLDS}) i;
        INSERT INTO mailbox (id, household_id, address, source_login, dest_login, protocol)
        SELECT {N_HOUSEHOLDS} + i, 'H' || lpad((4 * i)::text, 6, '0'),
               'v' || (4 * i) || '@d' || (1 + ((1 + (4 * i - 1) / 100) - 1) % {N_DOMAINS}) || '.example.jp',
               'v' || (4 * i), 'v' || (4 * i), 'imap'
        FROM generate_series(1, {N_HOUSEHOLDS // 4}) i;
        SELECT setval(pg_get_serial_sequence('mailbox', 'id'), (SELECT max(id) FROM mailbox));
        UPDATE building b SET est_messages = s.n * 280, est_bytes = s.n * 280 * 60000
        FROM (SELECT h.building_id, count(*) n FROM mailbox m JOIN household h ON h.id = m.household_id
              GROUP BY 1) s WHERE s.building_id = b.id;
        UPDATE wave w SET totals = jsonb_build_object('buildings', s.b, 'mailboxes', s.m,
               'messages', s.msg, 'bytes', s.bytes)
        FROM (SELECT b.wave_id, count(DISTINCT b.id) b, sum(b.est_messages) msg, sum(b.est_bytes) bytes,
                     (SELECT count(*) FROM mailbox m JOIN household h ON h.id = m.household_id
                      JOIN building b2 ON b2.id = h.building_id WHERE b2.wave_id = b.wave_id) m
              FROM building b GROUP BY b.wave_id) s WHERE s.wave_id = w.id;
    """, out=timings)
    # started mailboxes: those of waves 1..COPIED_WAVES
    started = f"""(SELECT m.id FROM mailbox m JOIN household h ON h.id = m.household_id
                   JOIN building b ON b.id = h.building_id WHERE b.wave_id <= {COPIED_WAVES})"""
    _run(conn, "folders", f"""
        INSERT INTO folder (id, mailbox_id, src_name, src_uidvalidity, dest_name, dest_uidvalidity)
        SELECT (s.id - 1) * 3 + f, s.id, (ARRAY['INBOX', 'Sent', 'Archive'])[f], 1700000000 + f,
               (ARRAY['INBOX', 'Sent', 'Archive'])[f], 1800000000 + f
        FROM {started} s, generate_series(1, 3) f;
        SELECT setval(pg_get_serial_sequence('folder', 'id'), (SELECT max(id) FROM folder));
    """, out=timings)
    _run(conn, "passes", f"""
        INSERT INTO pass (id, mailbox_id, kind, started_at, finished_at, status, counters)
        SELECT s.id, s.id, 'prestage',
               timestamptz '2026-01-12' + (s.id % 1000000) * interval '2 seconds',
               timestamptz '2026-01-12' + (s.id % 1000000) * interval '2 seconds' + interval '90 seconds',
               'finished',
               jsonb_build_object('copied', 100 + ((s.id::bigint * 7919) % 467)::int,
                                  'bytes', (100 + ((s.id::bigint * 7919) % 467)::int)::bigint * 60000)
        FROM {started} s;
        INSERT INTO pass (id, mailbox_id, kind, started_at, finished_at, status, counters)
        SELECT 1000000 + s.id, s.id, 'delta',
               now() - interval '1 hour' + (s.id % 3600) * interval '1 second',
               CASE WHEN s.id % 50 = 0 THEN NULL
                    ELSE now() - interval '1 hour' + (s.id % 3600) * interval '1 second' + interval '20 seconds' END,
               CASE WHEN s.id % 50 = 0 THEN 'running' ELSE 'finished' END,
               jsonb_build_object('copied', 3, 'bytes', 180000)
        FROM {started} s WHERE s.id % 2 = 0;
        SELECT setval(pg_get_serial_sequence('pass', 'id'), (SELECT max(id) FROM pass));
    """, out=timings)
    _run(conn, "drop_ledger_constraints", """
        ALTER TABLE message DROP CONSTRAINT message_folder_fk;
        ALTER TABLE message DROP CONSTRAINT message_pass_fk;
        ALTER TABLE waiver DROP CONSTRAINT waiver_message_fk;
        ALTER TABLE message DROP CONSTRAINT message_pkey;
        DROP INDEX message_unsettled_idx;
        DROP TRIGGER message_touch ON message;
    """, out=timings)
    with conn.cursor() as cur:
        cur.execute(f"SELECT min(id), max(id) FROM {started} x")
        lo, hi = cur.fetchone()
    conn.commit()
    step = args.chunk
    t = time.monotonic()
    total = 0
    for a in range(lo, hi + 1, step):
        b = min(a + step - 1, hi)
        n = _run(conn, f"messages {a}-{b}", f"""
            INSERT INTO message (mailbox_id, folder_id, src_uid, dest_uid, size, internal_date, state,
                                 sys_flags, src_sha256, dest_sha256, transform, pass_id, detail, updated_at)
            SELECT s.id, (s.id - 1) * 3 + 1 + (u % 3), u, CASE WHEN st = 1 THEN u END,
                   1000 + ((s.id * 31 + u * 7919) % 120000), timestamptz '2020-01-01' + u * interval '7 hours',
                   st, (u % 2)::smallint, '\\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,
                   CASE WHEN st = 1 THEN '\\x0102030405060708091011121314151617181920212223242526272829303132'::bytea END,
                   0, s.id, CASE WHEN st IN (2, 3) THEN 'synthetic'
                                 WHEN st = 5 THEN 'header_bytes_replaced: synthetic' END, timestamptz '2026-01-12'
            FROM (SELECT m.id FROM mailbox m JOIN household h ON h.id = m.household_id
                  JOIN building b ON b.id = h.building_id
                  WHERE b.wave_id <= {COPIED_WAVES} AND m.id BETWEEN {a} AND {b}) s,
                 LATERAL generate_series(1, 100 + ((s.id::bigint * 7919) % 467)::int) u,
                 LATERAL (SELECT CASE WHEN s.id % 997 = 0 AND u = 1 THEN 2::smallint
                                      WHEN s.id % 1499 = 0 AND u = 2 THEN 3::smallint
                                      WHEN s.id % 1999 = 0 AND u = 3 THEN 5::smallint
                                      WHEN s.id % 50 = 0 AND u > 95 THEN 0::smallint
                                      ELSE 1::smallint END AS st) x
        """)
        total += n
        rate = total / max(time.monotonic() - t, 1e-6)
        print(json.dumps({"loaded": total, "rows_per_s": round(rate)}), flush=True)
    timings["messages_load"] = round(time.monotonic() - t, 1)
    timings["messages"] = total
    conn.close()
    timings.update(_finish(dsn))
    timings["total_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps({"generate": timings}), flush=True)
    return 0


def finish(args) -> int:
    """The post-load steps alone (after an interrupted `generate`: keeps the rows loaded so far)."""
    dsn = _dsn_for(args.dsn or os.environ["MAILSHIFT_DB_URL"], args.db_name)
    print(json.dumps({"finish": _finish(dsn)}), flush=True)
    return 0


def _finish(dsn: str) -> dict:
    timings: dict = {}
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
    started = f"""(SELECT m.id FROM mailbox m JOIN household h ON h.id = m.household_id
                   JOIN building b ON b.id = h.building_id WHERE b.wave_id <= {COPIED_WAVES})"""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'message_pkey'")
        has_pk = cur.fetchone()[0] > 0
    conn.commit()
    if not has_pk:
        _run(conn, "ledger_pk", "SET max_parallel_maintenance_workers = 2; "
             "ALTER TABLE message ADD CONSTRAINT message_pkey PRIMARY KEY (mailbox_id, folder_id, src_uid)",
             out=timings)
        _run(conn, "ledger_partial_idx", "CREATE INDEX message_unsettled_idx ON message "
             "(mailbox_id, state, folder_id, src_uid) WHERE state <> 1", out=timings)
    # The composite FKs are NOT re-created: PostgreSQL 15 cannot add them NOT VALID on a
    # partitioned table, validating them costs two joins over the whole ledger, and no read
    # query of the UI depends on them (the synthetic rows satisfy them by construction).
    _run(conn, "ledger_trigger", """
        CREATE TRIGGER message_touch BEFORE UPDATE ON message
            FOR EACH ROW EXECUTE FUNCTION mailshift_touch_updated_at();
    """, out=timings)
    _run(conn, "proof_etc", f"""
        INSERT INTO verify_run (id, scope, scope_id, kind, started_at, finished_at, status)
        SELECT i, 'building', 'B' || lpad(i::text, 5, '0'), 'pre_cutover', timestamptz '2026-01-20',
               timestamptz '2026-01-20' + interval '1 hour', 'finished'
        FROM generate_series(1, {N_BUILDINGS}) i;
        INSERT INTO proof (mailbox_id, verify_run_id, kind, verdict, src_messages, dest_messages, matched,
                           waived, ledger_as_of, proven_at)
        SELECT m.id, substr(b.id, 2)::int, 'pre_cutover',
               CASE WHEN m.id % 997 = 0 THEN 'proven_with_waivers' WHEN m.id % 1499 = 0 THEN 'failed'
                    ELSE 'proven' END,
               100 + ((m.id::bigint * 7919) % 467)::int, 100 + ((m.id::bigint * 7919) % 467)::int,
               CASE WHEN m.id % 997 = 0 THEN 99 + ((m.id::bigint * 7919) % 467)::int ELSE 100 + ((m.id::bigint * 7919) % 467)::int END,
               CASE WHEN m.id % 997 = 0 THEN 1 ELSE 0 END,
               timestamptz '2026-01-12', timestamptz '2026-01-20' + interval '1 hour'
        FROM mailbox m JOIN household h ON h.id = m.household_id JOIN building b ON b.id = h.building_id
        WHERE b.wave_id <= {PROVEN_WAVES};
        INSERT INTO waiver (mailbox_id, folder_id, src_uid, scope, reason, requested_by, approved_by)
        SELECT m.id, (m.id - 1) * 3 + 2, 1, 'message', 'customer agreed: message too large', 'ops', 'lead'
        FROM mailbox m WHERE m.id % 997 = 0 AND m.id IN {started};
        INSERT INTO exception (kind, severity, status, building_id, mailbox_id, summary)
        SELECT 'copy_failed', 'blocking', 'open', h.building_id, m.id, 'synthetic failure'
        FROM mailbox m JOIN household h ON h.id = m.household_id
        WHERE m.id % 1499 = 0 AND m.id IN {started};
        INSERT INTO notice (household_id, mailbox_id, campaign, kind, channel, status, sent_at)
        SELECT m.household_id, m.id, 'migration', 'email_round_1', 'email', 'sent', timestamptz '2026-01-01'
        FROM mailbox m;
        -- the MX of 20 domains swapped (their buildings show as cut over on the map)
        INSERT INTO dns_change (domain, kind, status, approved_by, approved_at, applied_at)
        SELECT 'd' || i || '.example.jp', 'mx_swap', 'applied', 'lead', timestamptz '2026-02-01',
               timestamptz '2026-02-01' FROM generate_series(1, 20) i;
    """, out=timings)
    _run(conn, "analyze", "ANALYZE", out=timings)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database()), (SELECT count(*) FROM message)")
        timings["db_bytes"], timings["message_rows"] = cur.fetchone()
    conn.close()
    return timings


def summarise(args) -> int:
    from mailshift.store import migrate
    from mailshift.store import progress as store

    dsn = _dsn_for(args.dsn or os.environ["MAILSHIFT_DB_URL"], args.db_name)
    applied = migrate.upgrade(dsn)
    conn = psycopg2.connect(dsn)
    t = time.monotonic()
    stats = store.rebuild_all(conn)
    took = round(time.monotonic() - t, 1)
    # 30 days of one sample per minute per wave (what a month of the refresher leaves behind)
    with conn, conn.cursor() as cur:
        cur.execute(f"""
            INSERT INTO progress_sample (wave_id, sampled_at, messages, bytes)
            SELECT w, now() - interval '30 days' + i * interval '1 minute', i::bigint * 100 * w, i::bigint * 6000000 * w
            FROM generate_series(1, {N_WAVES}) w, generate_series(0, 30 * 24 * 60 - 2) i
            ON CONFLICT DO NOTHING""")
        stats["synthetic_samples"] = cur.rowcount
    with conn, conn.cursor() as cur:
        cur.execute("ANALYZE mailbox_progress; ANALYZE building_progress")
    print(json.dumps({"applied": applied, "rebuild_all_s": took, "stats": stats}), flush=True)
    return 0


def time_overview(args) -> int:
    from mailshift.progress import queries

    dsn = _dsn_for(args.dsn or os.environ["MAILSHIFT_DB_URL"], args.db_name)
    out: dict = {}
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM household), (SELECT count(*) FROM mailbox),"
                    " (SELECT sum(reltuples)::bigint FROM pg_class WHERE relname LIKE 'message_p__'),"
                    " pg_database_size(current_database())")
        out["households"], out["mailboxes"], out["message_rows_est"], out["db_bytes"] = cur.fetchone()
    samples = []
    for _ in range(args.n):
        t = time.perf_counter()
        ov = queries.overview(conn)
        samples.append(time.perf_counter() - t)
    out["overview_query_ms"] = {"median": round(statistics.median(samples) * 1000, 1),
                                "min": round(min(samples) * 1000, 1), "max": round(max(samples) * 1000, 1),
                                "n": len(samples)}
    out["overview_totals"] = ov["totals"]
    out.update(time_map(args))
    # first call on a new connection (cold plan cache)
    c2 = psycopg2.connect(dsn)
    t = time.perf_counter()
    queries.overview(c2)
    out["overview_query_new_conn_ms"] = round((time.perf_counter() - t) * 1000, 1)
    c2.close()
    for name, fn in (("building_page_ms", lambda: queries.building_page(conn, "B00042")),
                     ("lookup_address_ms", lambda: queries.lookup(conn, "u4200@d42.example.jp")),
                     ("lookup_household_ms", lambda: queries.lookup(conn, "H004200"))):
        s = []
        for _ in range(max(3, args.n // 3)):
            t = time.perf_counter()
            fn()
            s.append(time.perf_counter() - t)
        out[name] = round(statistics.median(s) * 1000, 1)
    if args.url:
        import urllib.request
        s = []
        for _ in range(args.n):
            req = urllib.request.Request(args.url, headers={"Authorization": f"Bearer {args.token}"})
            t = time.perf_counter()
            with urllib.request.urlopen(req) as r:
                body = r.read()
            s.append(time.perf_counter() - t)
        out["overview_http_ms"] = {"median": round(statistics.median(s) * 1000, 1), "bytes": len(body),
                                   "min": round(min(s) * 1000, 1), "max": round(max(s) * 1000, 1)}
    conn.close()
    print(json.dumps(out, indent=1, default=str))
    return 0


def _timed(fn, n: int) -> dict:
    """Median / min / max milliseconds of n calls of fn."""
    s = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        s.append(time.perf_counter() - t)
    return {"median": round(statistics.median(s) * 1000, 1), "min": round(min(s) * 1000, 1),
            "max": round(max(s) * 1000, 1), "n": n}


def time_map(args) -> dict:
    """The building map: the query (all / one wave / one system) and the HTML it renders."""
    from mailshift.progress import pages, queries

    conn = psycopg2.connect(_dsn_for(args.dsn or os.environ["MAILSHIFT_DB_URL"], args.db_name))
    out: dict = {}
    m = queries.building_map(conn)
    out["map_cells"] = len(m["cells"])
    out["map_by_state"] = m["by_state"]
    out["map_query_ms"] = _timed(lambda: queries.building_map(conn), args.n)
    out["map_render_ms"] = _timed(lambda: pages.map_html(m, "/mailshift", "bench"), args.n)
    out["map_html_bytes"] = len(pages.map_html(m, "/mailshift", "bench").encode())
    wave = m["choices"]["waves"][len(m["choices"]["waves"]) // 2]["id"] if m["choices"]["waves"] else None
    out["map_one_wave_ms"] = _timed(lambda: queries.building_map(conn, wave=wave), args.n)
    system = m["choices"]["systems"][-1]
    out["map_one_system_ms"] = _timed(lambda: queries.building_map(conn, system=system), args.n)
    out["domains_ms"] = _timed(lambda: queries.domains(conn), args.n)
    out["wave_page_ms"] = _timed(lambda: queries.wave_page(conn, wave), args.n)
    conn.close()
    return out


def http(args) -> int:
    """The pages over HTTP through a real api-server with the plugin, on the bench database."""
    import urllib.request

    from lab import airflow_services
    from lab.airflow_home import airflow_env, ensure_metadata_db
    from lab.config import LabConfig

    cfg = LabConfig.load()
    dsn = _dsn_for(args.dsn or os.environ["MAILSHIFT_DB_URL"], args.db_name)
    os.environ["MAILSHIFT_AIRFLOW_API_PORT"] = str(args.port)
    ensure_metadata_db(cfg, args.airflow_db)
    env = airflow_env(cfg, args.airflow_db)
    u = urllib.parse.urlsplit(dsn)
    env["AIRFLOW_CONN_MAILSHIFT_DB"] = json.dumps({"conn_type": "postgres", "host": u.hostname, "port": u.port,
                                                   "login": u.username, "password": u.password,
                                                   "schema": u.path.lstrip("/")})
    env.update({"MAILSHIFT_DB_URL": dsn, "MAILSHIFT_PROGRESS_REFRESH_SECONDS": "0",
                "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False"})
    airflow_services.COMPONENTS = tuple(c for c in airflow_services.COMPONENTS if c[0] == "api-server")
    out: dict = {}
    from pathlib import Path

    with airflow_services.AirflowServices(cfg, env, log_dir=Path(cfg.root) / "bench" / "ui-airflow-logs") as af:
        token = af.token()

        def get(path):
            req = urllib.request.Request(af.base + path, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read()

        for name, path in (("map", "/mailshift/map"), ("map_one_wave", "/mailshift/map?wave=5"),
                           ("map_one_system", "/mailshift/map?system=beta"), ("overview", "/mailshift/"),
                           ("map_json", "/mailshift/api/map"), ("domains", "/mailshift/domains")):
            out[name + "_bytes"] = len(get(path))          # first (cold) request not counted
            out[name + "_http_ms"] = _timed(lambda p=path: get(p), args.n)
        if args.chromium:
            out["chromium"] = chromium_loads(af.base, token, args.n)
    print(json.dumps(out, indent=1))
    return 0


def chromium_loads(base: str, token: str, n: int) -> dict:
    """The map as a user sees it: headless Chromium (Debian's chromium + chromedriver) loads
    /mailshift/map n times with the operator's JWT cookie; navigation start to the end of the
    load event (and its phases), median."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='uibench-chromium-')}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        drv.get(base + "/api/v2/version")
        drv.add_cookie({"name": "_token", "value": token, "path": "/"})
        loads, phases = [], []
        for _ in range(n + 1):
            drv.get(base + "/mailshift/map")
            phases.append(drv.execute_script(
                "const n = performance.getEntriesByType('navigation')[0]; return {total: n.loadEventEnd - n.startTime,"
                " server: n.responseStart - n.requestStart, transfer: n.responseEnd - n.responseStart,"
                " dom: n.domContentLoadedEventEnd - n.responseEnd, bytes: n.transferSize,"
                " cells: document.querySelectorAll('#building-map a').length};"))
            loads.append(phases[-1]["total"])
        loads, phases = loads[1:], phases[1:]          # the first load warms the cache
        med = sorted(range(n), key=lambda i: loads[i])[n // 2]
        return {"median_ms": round(statistics.median(loads), 1), "min_ms": round(min(loads), 1),
                "max_ms": round(max(loads), 1), "n": n, "median_run_phases": phases[med]}
    finally:
        drv.quit()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="any database URL in the target cluster (default $MAILSHIFT_DB_URL)")
    p.add_argument("--db-name", default="mailshift_uibench")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--chunk", type=int, default=20000, help="mailbox ids per INSERT statement")
    g.set_defaults(func=generate)
    sub.add_parser("finish", help="post-load steps only (after an interrupted generate)").set_defaults(func=finish)
    sub.add_parser("summarise").set_defaults(func=summarise)
    t = sub.add_parser("time")
    t.add_argument("-n", type=int, default=9)
    t.add_argument("--url", help="overview page URL (with --token) to time over HTTP too")
    t.add_argument("--token", default="")
    t.set_defaults(func=time_overview)
    h = sub.add_parser("http", help="time the pages through an Airflow api-server with the plugin")
    h.add_argument("-n", type=int, default=9)
    h.add_argument("--port", type=int, default=14392)
    h.add_argument("--airflow-db", default="airflow_uibench")
    h.add_argument("--chromium", action="store_true", help="also time the map's load in headless Chromium")
    h.set_defaults(func=http)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
