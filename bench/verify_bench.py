"""Verify cost vs copy cost on the lab: full digest vs sample mode (header digest + size for all,
full digest for a random sample).

Loads a corpus profile into fresh, unique lab accounts (never the seeded demo users) and a fresh
database, copies every mailbox (timed), then verifies every mailbox in full and in sample mode
(timed), and prints JSON with seconds, MB/s and seconds per GB of each.

    .venv/bin/python bench/verify_bench.py --profile demo [--sample-rate 0.02]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "tests")]

import psycopg2  # noqa: E402
from integration.test_copier import put, run  # noqa: E402
from integration.test_verify import _load_corpus, resolver  # noqa: E402

from lab import corpus, users  # noqa: E402
from lab.config import LabConfig  # noqa: E402
from mailshift.verify import verify_mailbox  # noqa: E402
from support.mail import LabMailbox, fresh_database  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sample-rate", type=float, default=0.02)
    args = ap.parse_args()
    cfg = LabConfig.load()
    inv = corpus.generate_inventory(args.seed, args.profile)
    out = {"profile": args.profile, "mailboxes": len(inv.mailboxes)}
    with fresh_database(cfg) as dsn:
        db = psycopg2.connect(dsn)
        rows = _load_corpus(db, cfg, inv)
        t = time.monotonic()
        for _mid, _m, server, login, addr in rows:
            users.ensure_users(cfg, server, [(login, None, None)], wait=False)
            users.ensure_users(cfg, "dest", [(addr, None, None)], wait=False)
        time.sleep(1.1)
        for _mid, m, server, login, _addr in rows:
            put(cfg, server, login, list(corpus.mailbox_messages(inv, m)))
        out["load_seconds"] = round(time.monotonic() - t, 2)
        copy_s = 0.0
        for mid, m, server, login, addr in rows:
            spec = next(b.spec_override or {} for b in inv.buildings if b.id == m.building_id)
            t = time.monotonic()
            run(db, cfg, LabMailbox(mid, addr, server, login, addr, m.protocol),
                uidl_strategy=spec.get("uidl_strategy", "none"), folder_map=spec.get("folder_map"))
            copy_s += time.monotonic() - t
        with db, db.cursor() as cur:
            cur.execute("SELECT count(*), sum(size) FROM message WHERE state = 1")
            n, size = cur.fetchone()
        out.update(messages_copied=n, mb_copied=round(size / 1e6, 1), copy_seconds=round(copy_s, 2))
        for mode in ("full", "sample"):
            t = time.monotonic()
            states, read, src_bytes = {}, 0, 0
            for mid, *_ in rows:
                v = verify_mailbox(db, mid, resolver(cfg), mode, sample_rate=args.sample_rate)
                states[v.state] = states.get(v.state, 0) + 1
                read += v.bytes_read
                src_bytes += v.src_bytes
            s = time.monotonic() - t
            out[mode] = {"seconds": round(s, 2), "states": states, "bytes_read_both_sides_mb": round(read / 1e6, 1),
                         "source_mb": round(src_bytes / 1e6, 1), "source_mb_per_s": round(src_bytes / 1e6 / s, 1),
                         "seconds_per_source_gb": round(s / (src_bytes / 1e9), 1),
                         "ratio_to_copy": round(s / copy_s, 2)}
        db.close()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
