"""`python -m mailshift.progress refresh [--full] [--rebuild]`: update the UI's summary tables."""

from __future__ import annotations

import argparse
import json
import sys

from mailshift.store import db
from mailshift.store import progress as store


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mailshift.progress")
    p.add_argument("--db", help="mailshift database URL (default $MAILSHIFT_DB_URL)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refresh", help="incremental refresh (changed mailboxes since the last one)")
    r.add_argument("--full", action="store_true", help="every mailbox with a pass, one by one")
    r.add_argument("--rebuild", action="store_true", help="recompute everything set-based")
    args = p.parse_args(argv)
    conn = db.connect(args.db)
    try:
        stats = store.rebuild_all(conn) if args.rebuild else store.refresh_changed(conn, full=args.full)
    finally:
        conn.close()
    json.dump(stats, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
