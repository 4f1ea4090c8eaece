"""Kill soak: SIGKILL the copier at N random moments (default 250) while new mail keeps
arriving, restart it each time, then check the destination holds every source message exactly
once (by SHA-256, flags and INTERNALDATE, read back over IMAP) and the ledger agrees.

    .venv/bin/python bench/kill_soak.py --kills 250 [--messages 1500] [--seed N]

Needs the lab (`make lab-up`). Prints a JSON summary; exits 1 on any loss or duplicate.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import psycopg2  # noqa: E402
from test_copier_kill import _assert_exactly_once, _messages, _put, _run_child  # noqa: E402

from lab.config import LabConfig  # noqa: E402
from mailshift.copy.copier import CopyOptions  # noqa: E402
from support.mail import add_mailbox, fresh_database, unique_login  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=250)
    ap.add_argument("--messages", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    cfg = LabConfig.load()
    rng = random.Random(args.seed)
    ctx = multiprocessing.get_context("fork")
    opts = CopyOptions(batch_messages=6, intent_grace_seconds=0.3, max_attempts=2, backoff_seconds=0.1)
    started = time.monotonic()
    with fresh_database(cfg) as dsn:
        db = psycopg2.connect(dsn)
        mb = add_mailbox(db, cfg, "src-a", unique_login("soak"), "imap")
        _put(cfg, "src-a", mb.source_login, list(_messages(rng, 0, args.messages)))
        made, kills, completions = args.messages, 0, 0
        while kills < args.kills:
            outcome = _run_child(ctx, dsn, cfg, mb, opts, kill_after=rng.uniform(0.03, 0.6))
            kills += outcome == "killed"
            if outcome == "done":
                completions += 1
                _put(cfg, "src-a", mb.source_login, list(_messages(rng, made, 200)))
                made += 200
        assert _run_child(ctx, dsn, cfg, mb, opts) == "done"
        result = {"kills": kills, "completed_runs_between_kills": completions, "source_messages": made,
                  "seconds": round(time.monotonic() - started, 1)}
        try:
            _assert_exactly_once(cfg, db, mb)
            result["exactly_once"] = True
        except AssertionError as exc:
            result["exactly_once"] = False
            result["error"] = str(exc)[:2000]
        db.close()
    print(json.dumps(result, indent=2))
    return 0 if result["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
