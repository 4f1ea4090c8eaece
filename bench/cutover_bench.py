"""The drain after the MX swap, measured against the lab (real Dovecot, PostgreSQL, the copier).

    PYTHONPATH=include:tests .venv/bin/python bench/cutover_bench.py [--mailboxes 200]

Builds N small mailboxes on src-a (2 messages each) in a fresh database, copies them (prestage),
then measures:
- one drain round over a quiet domain with the STATUS probe (`cutover.drain.StatusProbe`: one
  login + LIST + STATUS per folder, no pass) and without it (a `drain` pass per mailbox, as
  before issue #14): seconds per round and per mailbox, passes run;
- the late-mail delay: a message delivered to the OLD server while the drain polls (every
  `--poll` seconds) until it is in the ledger as copied - delivery to copy, in seconds.
Prints JSON. Bounded: one process, one connection at a time.

    .venv/bin/python bench/cutover_bench.py --table .lab/celery-airflow_celery/distributed-scale-*.json

prints bench/README.md's per-step table of the recorded cutover runs of tests/e2e/test_distributed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "include"), str(HERE.parent / "tests")]


def _setup(conn, cfg, n: int) -> list:
    from mailshift.copy.copy_one import copy_one
    from support.cutover import put_plain
    from support.mail import add_mailbox, unique_login

    boxes = []
    t = time.monotonic()
    for _ in range(n):
        mb = add_mailbox(conn, cfg, "src-a", unique_login("dr"))
        put_plain(cfg, "src-a", mb.source_login, 2, "pre")
        copy_one(conn, mb.id, "prestage")
        boxes.append(mb)
    return boxes, round(time.monotonic() - t, 1)


def _round(conn, domain, ids, probe) -> dict:
    from mailshift.copy.copy_one import copy_one
    from mailshift.cutover.drain import drain_domain

    r = drain_domain(conn, domain, copy_one, quiet_seconds=0, poll_seconds=0, require_swap=False,
                     mailbox_ids=ids, changed=probe)
    return {"round_s": r.round_seconds[0], "per_mailbox_ms": round(1000 * r.round_seconds[0] / len(ids), 1),
            "passes": r.passes, "checked": r.checked}


def _late_mail(conn, cfg, domain, boxes, poll: float) -> dict:
    from mailshift.copy.copy_one import copy_one
    from mailshift.cutover.drain import StatusProbe, drain_domain
    from mailshift.protocols.endpoint import endpoint_from_env
    from support.cutover import put_plain

    target = boxes[len(boxes) // 2]
    delivered = {}

    def deliver():
        time.sleep(2 * poll + 0.5)
        put_plain(cfg, "src-a", target.source_login, 1, "late")
        delivered["at"] = time.time()

    th = threading.Thread(target=deliver)
    th.start()
    r = drain_domain(conn, domain, copy_one, quiet_seconds=4 * poll + 3, poll_seconds=poll, require_swap=False,
                     mailbox_ids=[b.id for b in boxes], changed=StatusProbe(endpoint_from_env))
    th.join()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM max(g.updated_at)) FROM message g JOIN pass p ON p.id = g.pass_id"
                    " WHERE g.mailbox_id = %s AND p.kind = 'drain' AND g.state = 1", (target.id,))
        copied_at = cur.fetchone()[0]
    return {"poll_s": poll, "copied": r.copied, "rounds": r.rounds, "passes": r.passes,
            "round_s_max": max(r.round_seconds), "late_mail_delay_s": round(float(copied_at) - delivered["at"], 2)}


STEPS = ("gate", "approve_mx_swap", "plan_final_pass", "final_pass", "plan_reverify", "reverify", "reverify_merge",
         "reverify_close", "swap_mx", "drain", "plan_final_verify", "final_verify", "final_verify_merge",
         "final_verify_close", "final_proof")


def table(paths: list[str]) -> str:
    """bench/README.md's per-step table from the distributed test's recorded cutover runs
    (`.lab/celery-<db>/distributed-scale-N.json`): per run, tasks / step seconds / task seconds
    median-max / workers / most at once per pool / connections held per lab server."""
    runs = [json.loads(Path(x).read_text())["runs"]["cutover"] for x in paths]
    head = "| step | " + " | ".join(f"{r['mailboxes']} mailboxes: tasks / s / task s (median, max) / workers / "
                                     "pool at once / connections (src-a, src-b, dest)" for r in runs) + " |"
    rows = [head, "|---|" + "---|" * len(runs)]
    for step in STEPS:
        cells = []
        for r in runs:
            f = r["steps"].get(step)
            if not f:
                cells.append("-")
                continue
            pools = ", ".join(f"{p.replace('src_src_', '')} {n}" for p, n in sorted(f["max_concurrent_per_pool"].items()))
            conns = f.get("connections_max") or {}
            hosts = ", ".join(f"{h} {n}" for h, n in sorted(f["hosts"].items()))
            cells.append(f"{f['tasks']} / {f['seconds']} / {f.get('task_seconds_median')}, {f.get('task_seconds_max')}"
                         f" / {hosts} / {pools} / {conns.get('src-a', 0)}, {conns.get('src-b', 0)}, {conns.get('dest', 0)}")
        rows.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mailboxes", type=int, default=200)
    p.add_argument("--poll", type=float, default=2.0)
    p.add_argument("--table", nargs="+", metavar="JSON", help="print the per-step table of recorded distributed runs")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    import psycopg2

    from lab.config import LabConfig
    from lab.connections import airflow_conn_env
    from mailshift.cutover.drain import StatusProbe
    from mailshift.protocols.endpoint import endpoint_from_env
    from support.mail import DOMAIN, fresh_database

    cfg = LabConfig.load()
    os.environ.update(airflow_conn_env(cfg))
    with fresh_database(cfg) as dsn:
        conn = psycopg2.connect(dsn)
        boxes, setup_s = _setup(conn, cfg, args.mailboxes)
        ids = [b.id for b in boxes]
        doc = {"mailboxes": len(ids), "setup_s": setup_s,
               "quiet_round_with_status_probe": _round(conn, DOMAIN, ids, StatusProbe(endpoint_from_env)),
               "quiet_round_full_passes": _round(conn, DOMAIN, ids, None),
               "late_mail": _late_mail(conn, cfg, DOMAIN, boxes, args.poll)}
        conn.close()
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
