"""Time the cutover gate for the largest domain of a (large) mailshift database.

    PYTHONPATH=include .venv/bin/python bench/gate_bench.py generate [--db-name mailshift_gatebench]
    PYTHONPATH=include .venv/bin/python bench/gate_bench.py time postgresql://.../mailshift_gatebench [-n 3]

`generate` builds the issue #14 scale: bench/ui_bench.py's database (~500,000 mailboxes,
~100M ledger rows, proofs, waivers, open exceptions) with every building moved onto ONE domain
(the ISP's single MX). ui_bench loads the ledger without its indexes and triggers; so that the
load is not slowed by them, migration 0009's index and triggers are dropped for the load and
re-created afterwards, then `mailbox_ledger` is filled from the ledger as the migration does (each
step timed). Migration 0012 (`mailbox_latest`, kept by triggers on `pass`/`proof`) is taken out
before the load and applied afterwards as `mailshift.store.migrate.upgrade` applies a file, as on
a database in use: its backfill is timed (`apply-0012 DSN` does that step alone).

`time` prints JSON: domain, mailboxes, ledger rows, verdict, reasons, the load average before and
after, and the median/min/max seconds of `-n` runs of `mailshift.cutover.gate.evaluate_gate` (the
notice condition left out, as before) from the summaries; with `--full` also the former full
evaluation (`live=True`, one run: it scans the ledger) and whether both give the same verdict and
reasons; with `--breakdown` one more run split into its parts (facts read over 1 and over
`--connections` connections, decide, the rest). `--connections` / `--chunk` set
`store.proofs.CONNECTIONS` / `CHUNK_HOUSEHOLDS` for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "include"))
sys.path.insert(0, str(HERE))

ONE_DOMAIN = "isp.example.jp"
_0009 = (HERE.parent / "include/mailshift/store/migrations/0009_ledger_marks.sql").read_text()
_0012_OBJECTS = """
DROP TRIGGER IF EXISTS pass_latest_ins ON pass; DROP TRIGGER IF EXISTS pass_latest_upd ON pass;
DROP TRIGGER IF EXISTS pass_latest_del ON pass; DROP TRIGGER IF EXISTS pass_latest_trunc ON pass;
DROP TRIGGER IF EXISTS proof_latest_ins ON proof; DROP TRIGGER IF EXISTS proof_latest_upd ON proof;
DROP TRIGGER IF EXISTS proof_latest_del ON proof; DROP TRIGGER IF EXISTS proof_latest_trunc ON proof;
DROP FUNCTION IF EXISTS mailbox_latest_pass_apply(); DROP FUNCTION IF EXISTS mailbox_latest_proof_apply();
DROP FUNCTION IF EXISTS mailbox_latest_pass_probe(int[]); DROP FUNCTION IF EXISTS mailbox_latest_proof_probe(int[]);
DROP TABLE IF EXISTS mailbox_latest;
DELETE FROM schema_migration WHERE name = '0012_mailbox_latest';
"""


def _drop_0009(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS message_mailbox_updated_idx")
        for t in ("message_ledger_ins", "message_ledger_upd", "message_ledger_del"):
            cur.execute(f"DROP TRIGGER IF EXISTS {t} ON message")
        cur.execute(_0012_OBJECTS)    # applied again after the load, by migrate.upgrade
    conn.close()


def _step(conn, label: str, sql: str, out: dict) -> None:
    t = time.monotonic()
    with conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute(sql)
    out[label] = round(time.monotonic() - t, 1)
    print(json.dumps({"step": label, "seconds": out[label]}), flush=True)


def generate(args) -> int:
    import ui_bench

    from mailshift.store import migrate

    upgrade = migrate.upgrade

    def upgrade_without_0009_objects(dsn, *a, **kw):
        result = upgrade(dsn, *a, **kw)
        _drop_0009(dsn)
        return result

    migrate.upgrade = upgrade_without_0009_objects
    if args.households != ui_bench.N_HOUSEHOLDS:   # a smaller run of the same shape (100 households a building)
        ui_bench.N_HOUSEHOLDS = args.households
        ui_bench.N_BUILDINGS = max(ui_bench.N_WAVES, args.households // 100 // ui_bench.N_WAVES * ui_bench.N_WAVES)
        ui_bench.N_DOMAINS = min(ui_bench.N_DOMAINS, ui_bench.N_BUILDINGS)
    ns = argparse.Namespace(dsn=args.dsn, db_name=args.db_name, chunk=20000)
    ui_bench.generate(ns)
    migrate.upgrade = upgrade
    dsn = ui_bench._dsn_for(args.dsn or os.environ["MAILSHIFT_DB_URL"], args.db_name)
    conn = psycopg2.connect(dsn)
    out: dict = {}
    _step(conn, "one_domain", f"INSERT INTO domain (name, mx_ttl) VALUES ('{ONE_DOMAIN}', 3600);"
                              f"UPDATE building SET domain = '{ONE_DOMAIN}'", out)
    body = "CREATE TABLE mailbox_ledger" + _0009.split("CREATE TABLE mailbox_ledger", 1)[1]
    _step(conn, "0009_index", "SET max_parallel_maintenance_workers = 2;"
          "CREATE INDEX message_mailbox_updated_idx ON message (mailbox_id, updated_at)", out)
    _step(conn, "0009_marks_backfill", "DROP TRIGGER IF EXISTS message_ledger_ins ON message;"
          "DROP TRIGGER IF EXISTS message_ledger_upd ON message; DROP TRIGGER IF EXISTS message_ledger_del ON message;"
          "DROP TABLE IF EXISTS mailbox_ledger; DROP FUNCTION IF EXISTS mailbox_ledger_apply();" + body, out)
    out.update(_apply_0012(dsn))
    _step(conn, "analyze", "ANALYZE", out)
    print(json.dumps({"gate_bench_generate": out}), flush=True)
    return 0


def _apply_0012(dsn: str) -> dict:
    """Migration 0012 on the loaded database, exactly as `migrate.upgrade` applies a file (its SQL
    and its schema_migration row in one transaction; upgrade itself refuses once later versions
    are applied), timed: the backfill of `mailbox_latest` from every pass and proof."""
    from mailshift.store import migrate

    (m,) = [m for m in migrate.discover() if m.name == "0012_mailbox_latest"]
    conn = psycopg2.connect(dsn)
    started = time.monotonic()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM schema_migration WHERE version = %s", (m.version,))
        if cur.fetchone():
            return {"0012_backfill": "already applied"}
        cur.execute(m.sql)
        cur.execute("INSERT INTO schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum))
        cur.execute("SELECT count(*) FROM mailbox_latest")
        rows = cur.fetchone()[0]
    conn.close()
    out = {"0012_backfill": round(time.monotonic() - started, 1), "0012_rows": rows}
    print(json.dumps({"step": "0012_backfill", **out}), flush=True)
    return out


def _largest_domain(conn) -> tuple[str, int, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT domain, count(*) FROM mailbox_scope GROUP BY domain ORDER BY 2 DESC LIMIT 1")
        domain, mailboxes = cur.fetchone()
        cur.execute("SELECT coalesce(sum(n_rows), 0) FROM mailbox_ledger")
        rows = cur.fetchone()[0]
    conn.commit()
    return domain, mailboxes, int(rows)


def _breakdown(conn, domain: str, connections: int) -> dict:
    """One more evaluation taken apart: reading the facts (one connection, then `connections`),
    deciding, and the rest of the gate (exceptions, summary) as the difference to a whole run."""
    from mailshift.cutover.gate import evaluate_gate
    from mailshift.rules import proof
    from mailshift.store import proofs

    out = {}
    for n in sorted({1, connections}):
        started, cpu, db_cpu = time.perf_counter(), time.process_time(), _backend_cpu(conn)
        with proofs.gc_paused():
            facts = [f for c in proofs.facts_in_chunks(conn, domain=domain, connections=n) for f in c]
        out[f"facts_read_{n}_conn_s"] = round(time.perf_counter() - started, 3)
        if n == 1:   # CPU seconds, not disturbed by the machine's load: PostgreSQL's and ours
            out["facts_read_1_conn_db_cpu_s"] = round(_backend_cpu(conn) - db_cpu, 2)
            out["facts_read_1_conn_python_cpu_s"] = round(time.process_time() - cpu, 2)
    started, cpu = time.perf_counter(), time.process_time()
    with proofs.gc_paused():
        found = [proof.decide(f) for f in facts]
    out["decide_s"] = round(time.perf_counter() - started, 3)
    out["decide_cpu_s"] = round(time.process_time() - cpu, 2)
    out["proven_or_waived"] = sum(1 for s in found if s.ok)
    started, cpu = time.perf_counter(), time.process_time()
    evaluate_gate(conn, domain, notice_check=lambda c, d: [])
    out["whole_gate_s"] = round(time.perf_counter() - started, 3)
    out["whole_gate_python_cpu_s"] = round(time.process_time() - cpu, 2)
    return out


def _backend_cpu(conn) -> float:
    """CPU seconds of `conn`'s PostgreSQL backend so far (/proc: the lab cluster is local)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    conn.commit()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_gate(args) -> int:
    from mailshift.cutover.gate import evaluate_gate
    from mailshift.store import proofs

    if args.connections:
        proofs.CONNECTIONS = args.connections
    if args.chunk:
        proofs.CHUNK_HOUSEHOLDS = args.chunk
    conn = psycopg2.connect(args.dsn)
    domain, mailboxes, rows = _largest_domain(conn)
    load_before = os.getloadavg()
    times = []
    for _ in range(args.n):
        started = time.perf_counter()
        verdict = evaluate_gate(conn, domain, notice_check=lambda c, d: [])
        times.append(time.perf_counter() - started)
    doc = {"domain": domain, "mailboxes": mailboxes, "ledger_rows": rows, "passed": verdict.passed,
           "reasons": len(verdict.reasons), "counted_live": verdict.summary.get("mailboxes_counted_live"),
           "connections": proofs.CONNECTIONS, "chunk_households": proofs.CHUNK_HOUSEHOLDS,
           "runs": len(times), "times_s": [round(t, 3) for t in times],
           "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
           "max_s": round(max(times), 3), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    if args.breakdown:
        doc["breakdown"] = _breakdown(conn, domain, proofs.CONNECTIONS)
    if args.full:
        started = time.perf_counter()
        full = evaluate_gate(conn, domain, notice_check=lambda c, d: [], live=True)
        doc["full_s"] = round(time.perf_counter() - started, 3)
        doc["same_verdict_and_reasons"] = (full.passed == verdict.passed and full.reasons == verdict.reasons)
    print(json.dumps(doc))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--dsn", help="any database URL in the target cluster (default $MAILSHIFT_DB_URL)")
    g.add_argument("--db-name", default="mailshift_gatebench")
    g.add_argument("--households", type=int, default=400_000, help="(x 1.25 mailboxes) default: the issue's scale")
    t = sub.add_parser("time")
    t.add_argument("dsn")
    t.add_argument("-n", type=int, default=3)
    t.add_argument("--full", action="store_true", help="also the full evaluation over the ledger (slow)")
    t.add_argument("--breakdown", action="store_true", help="one more run split into facts read / decide / rest")
    t.add_argument("--connections", type=int, help="store.proofs.CONNECTIONS for the run (default: the module's)")
    t.add_argument("--chunk", type=int, help="store.proofs.CHUNK_HOUSEHOLDS for the run")
    a = sub.add_parser("apply-0012", help="apply migration 0012 to a generated database (timed), then ANALYZE it")
    a.add_argument("dsn")
    args = p.parse_args()
    if args.cmd == "apply-0012":
        out = _apply_0012(args.dsn)
        _step(psycopg2.connect(args.dsn), "analyze", "ANALYZE mailbox_latest", out)
        return 0
    return generate(args) if args.cmd == "generate" else time_gate(args)


if __name__ == "__main__":
    sys.exit(main())
