"""Time the cutover gate for the largest domain of a (large) mailshift database.

    PYTHONPATH=include .venv/bin/python bench/gate_bench.py generate [--db-name mailshift_gatebench]
    PYTHONPATH=include .venv/bin/python bench/gate_bench.py time postgresql://.../mailshift_gatebench [-n 3]

`generate` builds the issue #14 scale: bench/ui_bench.py's database (~500,000 mailboxes,
~100M ledger rows, proofs, waivers, open exceptions) with every building moved onto ONE domain
(the ISP's single MX). ui_bench loads the ledger without its indexes and triggers; so that the
load is not slowed by them, migration 0009's index and triggers are dropped for the load and
re-created afterwards, then `mailbox_ledger` is filled from the ledger as the migration does (each
step timed).

`time` prints JSON: domain, mailboxes, ledger rows, verdict, reasons, and the median/min/max
seconds of `-n` runs of `mailshift.cutover.gate.evaluate_gate` (the notice condition left out,
as before) from the summaries, and with `--full` also the former full evaluation (`live=True`,
one run: it scans the ledger) and whether both give the same verdict and reasons.
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


def _drop_0009(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS message_mailbox_updated_idx")
        for t in ("message_ledger_ins", "message_ledger_upd", "message_ledger_del"):
            cur.execute(f"DROP TRIGGER IF EXISTS {t} ON message")
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
    _step(conn, "analyze", "ANALYZE", out)
    print(json.dumps({"gate_bench_generate": out}), flush=True)
    return 0


def _largest_domain(conn) -> tuple[str, int, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT domain, count(*) FROM mailbox_scope GROUP BY domain ORDER BY 2 DESC LIMIT 1")
        domain, mailboxes = cur.fetchone()
        cur.execute("SELECT coalesce(sum(n_rows), 0) FROM mailbox_ledger")
        rows = cur.fetchone()[0]
    conn.commit()
    return domain, mailboxes, int(rows)


def time_gate(args) -> int:
    from mailshift.cutover.gate import evaluate_gate

    conn = psycopg2.connect(args.dsn)
    domain, mailboxes, rows = _largest_domain(conn)
    times = []
    for _ in range(args.n):
        started = time.perf_counter()
        verdict = evaluate_gate(conn, domain, notice_check=lambda c, d: [])
        times.append(time.perf_counter() - started)
    doc = {"domain": domain, "mailboxes": mailboxes, "ledger_rows": rows, "passed": verdict.passed,
           "reasons": len(verdict.reasons), "counted_live": verdict.summary.get("mailboxes_counted_live"),
           "runs": len(times), "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
           "max_s": round(max(times), 3)}
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
    args = p.parse_args()
    return generate(args) if args.cmd == "generate" else time_gate(args)


if __name__ == "__main__":
    sys.exit(main())
