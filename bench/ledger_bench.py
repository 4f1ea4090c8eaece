#!/usr/bin/env python3
"""Ledger benchmark: load synthetic `message` rows the way the copier writes
them, then measure size per row and the hot queries. Prints one JSON object.

    PYTHONPATH=include python bench/ledger_bench.py --rows 10000000 --mode copy
    PYTHONPATH=include python bench/ledger_bench.py --rows 1000000 --mode intent

Modes (all write per mailbox, in batches of --batch rows, one transaction per
batch, like the copier):
  copy    COPY ... FROM STDIN of final-state rows
  insert  INSERT ... VALUES (batch rows) of final-state rows (psycopg2 execute_values)
  intent  INSERT state=0 rows, commit, then UPDATE them to their final state
          (copied / failed / ...) with dest_uid + dest_sha256, commit -- the
          copier's intent -> APPEND -> copied protocol; shows the update cost
          and the dead-tuple bloat before/after VACUUM.

A fresh database `ledger_bench_<pid>` is created in the cluster of --dsn (default
$MAILSHIFT_DB_URL), migrated with mailshift.store.migrate, and dropped at the
end unless --keep. Timings: `load_s` is time spent in database calls (execute,
COPY, commit, including psycopg2's client-side quoting); `gen_s` is synthetic
data generation, excluded from rows_per_s.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import random
import statistics
import sys
import time

import psycopg2
import psycopg2.extensions
import psycopg2.extras

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include"))
from mailshift import db  # noqa: E402
from mailshift.store import migrate  # noqa: E402

COLS = ("mailbox_id", "folder_id", "src_uid", "dest_uid", "size", "internal_date", "state",
        "sys_flags", "keywords", "src_sha256", "dest_sha256", "transform", "pop3_uidl",
        "pass_id", "detail")
FOLDERS = ["INBOX", "Sent", "Trash", "Drafts", "Junk", "Archive", "work", "family",
           "shopping", "travel", "bank", "old", "2019", "2020"]
FOLDER_SHARE = [55, 20, 5, 1, 3] + [2] * 9


def build_plan(rng, n_rows, n_mailboxes, pop3_share):
    """Per mailbox: (protocol, [(folder_name, uidvalidity, n_messages)])."""
    weights = [rng.lognormvariate(0, 1.2) for _ in range(n_mailboxes)]
    scale = n_rows / sum(weights)
    counts = [max(1, int(w * scale)) for w in weights]
    counts[-1] += n_rows - sum(counts)
    if counts[-1] < 1:  # pragma: no cover - only for silly arguments
        raise SystemExit("too few rows for that many mailboxes")
    plan = []
    for n in counts:
        if rng.random() < pop3_share:
            plan.append(("pop3", [("INBOX", 0, n)]))
            continue
        k = min(len(FOLDERS), 1 + int(rng.expovariate(1 / 4)))
        share = FOLDER_SHARE[:k]
        split = [int(n * s / sum(share)) for s in share]
        split[0] += n - sum(split)
        plan.append(("imap", [(FOLDERS[i], rng.randrange(1, 2**31), split[i])
                              for i in range(k) if split[i] > 0]))
    return plan


class Pools:
    """Pre-drawn realistic values, picked by index (keeps generation cheap)."""

    def __init__(self, rng):
        base = dt.datetime(2013, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=9)))
        span = 12 * 365 * 86400
        self.dates = sorted(base + dt.timedelta(seconds=rng.randrange(span)) for _ in range(8192))
        self.date_txt = [d.isoformat() for d in self.dates]
        # sizes: lognormal, median ~12 KB, a tail of attachments
        self.sizes = [min(50_000_000, int(rng.lognormvariate(math.log(12_000), 1.3)))
                      for _ in range(8192)]
        flags = [1] * 70 + [3] * 10 + [0] * 12 + [5] * 4 + [1 | 8] * 2 + [16] * 2
        self.flags = [rng.choice(flags) for _ in range(8192)]
        kw = [None] * 94 + [["$Forwarded"]] * 3 + [["Junk"]] + [["$MDNSent"]] + [["$Forwarded", "NonJunk"]]
        self.keywords = [rng.choice(kw) for _ in range(8192)]
        # final states: mostly copied, a few expunged / failed / refused / stuck intents
        st = [1] * 9940 + [4] * 30 + [3] * 20 + [2] * 9 + [0] * 1
        self.states = [rng.choice(st) for _ in range(8192)]


DETAIL = {2: "NO [OVERQUOTA] Quota exceeded", 3: "socket timeout during APPEND", 0: None,
          1: None, 4: None}


def mailbox_rows(rng, pools, mailbox_id, protocol, folders, pass_id):
    """Final-state rows of one mailbox as tuples in COLS order."""
    rows = []
    for folder_id, _uidvalidity, n in folders:
        uid = 0
        dest_uid = 0
        for _ in range(n):
            uid += 1 if rng.random() > 0.1 else rng.randint(2, 6)
            r = rng.getrandbits(13)
            state = pools.states[r]
            digest = hashlib.sha256(b"%d/%d/%d" % (mailbox_id, folder_id, uid)).digest()
            if protocol == "pop3":
                uidl = "%08x%08x" % (uid, 0x5A3B2C1D)
                transform = 1
                dest_digest = hashlib.sha256(digest).digest()
            else:
                uidl, transform, dest_digest = None, 0, digest
            if state in (1, 4):
                dest_uid += 1
                d_uid, d_sha = dest_uid, dest_digest
            else:
                d_uid = d_sha = None
            rows.append((mailbox_id, folder_id, uid, d_uid, pools.sizes[r], pools.date_txt[r],
                         state, pools.flags[r], pools.keywords[(r * 7) & 8191], digest, d_sha,
                         transform, uidl, pass_id, DETAIL[state]))
    return rows


def _copy_text(rows):
    out = []
    for r in rows:
        f = []
        for v in r:
            if v is None:
                f.append("\\N")
            elif isinstance(v, bytes):
                f.append("\\\\x" + v.hex())
            elif isinstance(v, list):
                f.append("{" + ",".join(v) + "}")
            else:
                f.append(str(v))
        out.append("\t".join(f))
    return io.StringIO("\n".join(out) + "\n")


def seed_inventory(cur, plan):
    cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port, "
                "max_connections) VALUES ('bench', 'dovecot', 'src.invalid', 143, 110, 8)")
    cur.execute("INSERT INTO domain (name, mx_ttl) VALUES ('bench.example.jp', 3600)")
    n_buildings = max(1, len(plan) // 50)
    psycopg2.extras.execute_values(
        cur, "INSERT INTO building (id, name, domain, source_system) VALUES %s",
        [(f"B{b:05d}", f"Building {b}", "bench.example.jp", "bench") for b in range(n_buildings)])
    psycopg2.extras.execute_values(
        cur, "INSERT INTO household (id, building_id) VALUES %s",
        [(f"H{i:07d}", f"B{i % n_buildings:05d}") for i in range(len(plan))])
    psycopg2.extras.execute_values(
        cur, "INSERT INTO mailbox (id, household_id, address, source_login, protocol) VALUES %s",
        [(i + 1, f"H{i:07d}", f"user{i}@bench.example.jp", f"user{i}", proto)
         for i, (proto, _f) in enumerate(plan)], page_size=1000)
    folder_rows = [(i + 1, name, uv) for i, (_p, fs) in enumerate(plan) for name, uv, _n in fs]
    ids = psycopg2.extras.execute_values(
        cur, "INSERT INTO folder (mailbox_id, src_name, src_uidvalidity) VALUES %s RETURNING id",
        folder_rows, page_size=1000, fetch=True)
    psycopg2.extras.execute_values(
        cur, "INSERT INTO pass (id, mailbox_id, kind) VALUES %s",
        [(i + 1, i + 1, "prestage") for i in range(len(plan))], page_size=1000)
    # resolved plan: mailbox_id -> (protocol, [(folder_id, uidvalidity, n)])
    it = iter(r[0] for r in ids)
    return {i + 1: (p, [(next(it), uv, n) for _name, uv, n in fs]) for i, (p, fs) in enumerate(plan)}


def load(conn, resolved, pools, rng, mode, batch):
    cur = conn.cursor()
    t_db = 0.0
    t_gen = 0.0
    n = 0
    ins = f"INSERT INTO message ({', '.join(COLS)}) VALUES %s"
    tmpl = "(" + ", ".join(["%s"] * len(COLS)) + ")"
    upd = ("UPDATE message AS m SET state = v.state, dest_uid = v.dest_uid, "
           "dest_sha256 = v.dest_sha256, detail = v.detail "
           "FROM (VALUES %s) AS v(folder_id, src_uid, state, dest_uid, dest_sha256, detail) "
           "WHERE m.mailbox_id = {mb} AND m.folder_id = v.folder_id AND m.src_uid = v.src_uid")
    upd_tmpl = "(%s::int, %s::bigint, %s::smallint, %s::bigint, %s::bytea, %s::text)"
    for mailbox_id, (proto, folders) in resolved.items():
        t0 = time.perf_counter()
        rows = mailbox_rows(rng, pools, mailbox_id, proto, folders, mailbox_id)
        if mode == "copy":
            chunks = [_copy_text(rows[i:i + batch]) for i in range(0, len(rows), batch)]
        else:
            chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
        t1 = time.perf_counter()
        t_gen += t1 - t0
        for chunk in chunks:
            if mode == "copy":
                cur.copy_expert(f"COPY message ({', '.join(COLS)}) FROM STDIN", chunk)
                conn.commit()
            elif mode == "insert":
                psycopg2.extras.execute_values(cur, ins, chunk, template=tmpl, page_size=len(chunk))
                conn.commit()
            else:  # intent -> final
                intents = [r[:3] + (None,) + r[4:6] + (0,) + r[7:10] + (None,) + r[11:14] + (None,)
                           for r in chunk]
                psycopg2.extras.execute_values(cur, ins, intents, template=tmpl,
                                               page_size=len(chunk))
                conn.commit()
                finals = [(r[1], r[2], r[6], r[3], r[10], r[14]) for r in chunk if r[6] != 0]
                if finals:
                    psycopg2.extras.execute_values(cur, upd.format(mb=int(mailbox_id)), finals,
                                                   template=upd_tmpl, page_size=len(finals))
                conn.commit()
            n += len(chunk) if mode != "copy" else 0
        if mode == "copy":
            n += len(rows)
        t_db += time.perf_counter() - t1
    cur.close()
    return n, t_db, t_gen


SIZE_SQL = """
SELECT
  (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('message') WHERE isleaf),
  (SELECT sum(pg_table_size(relid)) FROM pg_partition_tree('message') WHERE isleaf),
  (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('message_pkey') WHERE isleaf),
  (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('message_unsettled_idx') WHERE isleaf),
  (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('message') WHERE isleaf),
  (SELECT sum(n_live_tup) FROM pg_stat_user_tables WHERE relname LIKE 'message_p%%'),
  (SELECT sum(n_dead_tup) FROM pg_stat_user_tables WHERE relname LIKE 'message_p%%')
"""


def sizes(cur, rows):
    cur.execute(SIZE_SQL)
    heap, table, pkey, unsettled, total, live, dead = (int(v or 0) for v in cur.fetchone())
    return {
        "heap_bytes": int(heap), "table_bytes_incl_fsm_vm_toast": int(table),
        "pkey_bytes": int(pkey), "unsettled_idx_bytes": int(unsettled),
        "total_bytes": int(total),
        "bytes_per_row_total": round(total / rows, 1),
        "bytes_per_row_heap": round(heap / rows, 1),
        "bytes_per_row_pkey": round(pkey / rows, 1),
        "stat_live_tup": int(live or 0), "stat_dead_tup": int(dead or 0),
    }


def time_query(cur, sql, params_list):
    ms = []
    for params in params_list:
        t0 = time.perf_counter()
        cur.execute(sql, params)
        cur.fetchall()
        ms.append((time.perf_counter() - t0) * 1000)
    ms.sort()
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3),
            "p95_ms": round(ms[max(0, math.ceil(len(ms) * 0.95) - 1)], 3),
            "max_ms": round(ms[-1], 3)}


def queries(conn, resolved, rng):
    cur = conn.cursor()
    mbs = rng.sample(sorted(resolved), min(50, len(resolved)))
    big = sorted(resolved, key=lambda m: -sum(n for _f, _u, n in resolved[m][1]))[:10]
    inbox = [(m, resolved[m][1][0][0]) for m in mbs]
    out = {
        # copier resume: what the ledger knows about one mailbox, per folder
        "resume_mailbox_summary": time_query(
            cur, "SELECT folder_id, max(src_uid), count(*) FROM message "
                 "WHERE mailbox_id = %s GROUP BY folder_id", [(m,) for m in mbs]),
        # copier resume: known UIDs + state of one folder (to diff with UID SEARCH)
        "resume_folder_uids": time_query(
            cur, "SELECT src_uid, state FROM message WHERE mailbox_id = %s AND folder_id = %s "
                 "ORDER BY src_uid", inbox),
        "resume_folder_uids_10_biggest_mailboxes": time_query(
            cur, "SELECT src_uid, state FROM message WHERE mailbox_id = %s AND folder_id = %s "
                 "ORDER BY src_uid", [(m, resolved[m][1][0][0]) for m in big]),
        # proof / gate: per-mailbox state counts, and what is not copied
        "state_counts_mailbox": time_query(
            cur, "SELECT state, count(*) FROM message WHERE mailbox_id = %s GROUP BY state",
            [(m,) for m in mbs]),
        "unsettled_rows_mailbox": time_query(
            cur, "SELECT folder_id, src_uid, state, detail FROM message "
                 "WHERE mailbox_id = %s AND state <> 1", [(m,) for m in mbs]),
        "refresh_folder_progress_mailbox": time_query(
            cur, "SELECT refresh_folder_progress(%s)", [(m,) for m in mbs[:20]]),
        # global: all rows (seq scan of every partition) vs the partial index
        "state_counts_all": time_query(
            cur, "SELECT state, count(*) FROM message GROUP BY state", [()] * 3),
        "unsettled_counts_all": time_query(
            cur, "SELECT state, count(*) FROM message WHERE state <> 1 GROUP BY state", [()] * 3),
        "progress_summary_all": time_query(
            cur, "SELECT sum(n_copied), sum(n_intent + n_refused + n_failed) FROM folder_progress",
            [()] * 3),
    }
    conn.commit()
    cur.execute("EXPLAIN SELECT state, count(*) FROM message WHERE mailbox_id = 42 GROUP BY state")
    out["plan_state_counts_mailbox"] = [r[0] for r in cur.fetchall()]
    cur.execute("EXPLAIN SELECT count(*) FROM message WHERE state <> 1")
    out["plan_unsettled_counts_all"] = [r[0] for r in cur.fetchall()]
    cur.close()
    conn.commit()
    return out


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpus": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=None, help="any database in the target cluster "
                    f"(default ${db.ENV_VAR})")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--mailboxes", type=int, default=5000)
    ap.add_argument("--mode", choices=["copy", "insert", "intent"], default="copy")
    ap.add_argument("--batch", type=int, default=1000, help="rows per statement/transaction")
    ap.add_argument("--pop3-share", type=float, default=0.2)
    ap.add_argument("--fillfactor", type=int, default=None,
                    help="ALTER the message partitions' fillfactor before loading")
    ap.add_argument("--no-fk", action="store_true",
                    help="drop message's two foreign keys before loading (measures their cost)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-vacuum", action="store_true", help="skip VACUUM + re-measure")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = ap.parse_args(argv)

    base = db.resolve_dsn(args.dsn)
    name = f"ledger_bench_{os.getpid()}"
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg2.extensions.make_dsn(base, dbname=name)
    result = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "args": vars(args) | {"dsn": None}, "machine": machine()}
    try:
        migrate.upgrade(dsn)
        conn = db.connect(dsn, application_name="ledger-bench")
        cur = conn.cursor()
        cur.execute("SELECT version()")
        result["server"] = cur.fetchone()[0]
        cur.execute("SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', "
                    "'synchronous_commit', 'fsync', 'max_wal_size', 'wal_level', "
                    "'max_parallel_workers_per_gather', 'work_mem')")
        result["settings"] = dict(cur.fetchall())
        if args.fillfactor:
            cur.execute("SELECT relid::regclass::text FROM pg_partition_tree('message') WHERE isleaf")
            for (part,) in cur.fetchall():
                cur.execute(f"ALTER TABLE {part} SET (fillfactor = {int(args.fillfactor)})")
        if args.no_fk:
            cur.execute("ALTER TABLE message DROP CONSTRAINT message_folder_fk, "
                        "DROP CONSTRAINT message_pass_fk")
        rng = random.Random(args.seed)
        plan = build_plan(rng, args.rows, args.mailboxes, args.pop3_share)
        resolved = seed_inventory(cur, plan)
        conn.commit()
        pools = Pools(rng)

        t0 = time.perf_counter()
        n, t_db, t_gen = load(conn, resolved, pools, rng, args.mode, args.batch)
        wall = time.perf_counter() - t0
        result["load"] = {"rows": n, "load_s": round(t_db, 2), "gen_s": round(t_gen, 2),
                          "wall_s": round(wall, 2), "rows_per_s": round(n / t_db),
                          "rows_per_s_wall": round(n / wall)}
        cur.execute("SELECT count(*) FROM folder")
        result["load"]["folders"] = cur.fetchone()[0]
        result["load"]["mailboxes"] = len(resolved)
        cur.execute("ANALYZE message")
        conn.commit()
        result["size_after_load"] = sizes(cur, n)
        conn.commit()
        result["queries"] = queries(conn, resolved, random.Random(args.seed + 1))
        if not args.no_vacuum:
            conn.autocommit = True
            t0 = time.perf_counter()
            cur.execute("VACUUM (ANALYZE) message")
            result["vacuum_s"] = round(time.perf_counter() - t0, 2)
            time.sleep(1)  # let the statistics collector catch up
            result["size_after_vacuum"] = sizes(cur, n)
            conn.autocommit = False
            result["queries_after_vacuum"] = {
                k: v for k, v in queries(conn, resolved, random.Random(args.seed + 1)).items()
                if not k.startswith("plan_")}
        conn.close()
    finally:
        if not args.keep:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            result["kept_database"] = name
        admin.close()
    result["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
