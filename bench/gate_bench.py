"""Time the cutover gate for the largest domain of a (large) mailshift database.

    PYTHONPATH=include .venv/bin/python bench/gate_bench.py postgresql://.../mailshift_uibench100

Prints JSON: domain, mailboxes, verdict, median/min/max seconds of 5 runs of
`mailshift.cutover.gate.evaluate_gate` (the notice condition left out).
"""

import json
import statistics
import sys
import time

import psycopg2

from mailshift.cutover.gate import evaluate_gate


def main(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT b.domain, count(*) FROM building b JOIN household h ON h.building_id = b.id"
                    " JOIN mailbox m ON m.household_id = h.id GROUP BY b.domain ORDER BY 2 DESC LIMIT 1")
        domain, mailboxes = cur.fetchone()
    times = []
    for _ in range(5):
        started = time.perf_counter()
        verdict = evaluate_gate(conn, domain, notice_check=lambda c, d: [])
        times.append(time.perf_counter() - started)
    print(json.dumps({"domain": domain, "mailboxes": mailboxes, "passed": verdict.passed,
                      "reasons": len(verdict.reasons), "median_s": round(statistics.median(times), 3),
                      "min_s": round(min(times), 3), "max_s": round(max(times), 3)}))


if __name__ == "__main__":
    main(sys.argv[1])
