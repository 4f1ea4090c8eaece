"""`mailshift ...`: the operator's command line. Every command prints a clear error and exits
non-zero on bad input; machine-readable output is JSON on stdout, progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from . import db


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


# -- db ---------------------------------------------------------------------------------------
def cmd_db_upgrade(args) -> int:
    from .ledger import migrate

    applied = migrate.upgrade(args.db)
    print("applied: " + (", ".join(applied) if applied else "nothing (already current)"))
    print(f"current: {migrate.current(args.db)}")
    return 0


def cmd_db_status(args) -> int:
    from .ledger import migrate

    _print_json(migrate.status(args.db))
    return 0


# -- inventory --------------------------------------------------------------------------------
def cmd_inventory_load(args) -> int:
    from .inventory.load import InventoryError, load_inventory

    conn = db.connect(args.db)
    try:
        report = load_inventory(conn, args.export_dir)
    except InventoryError as exc:
        print(f"inventory NOT loaded (nothing was written):\n{exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(report)
    return 0


# -- status -----------------------------------------------------------------------------------
STATUS_SQL = {
    "source_systems": "SELECT count(*) FROM source_system",
    "domains": "SELECT count(*) FROM domain",
    "buildings": "SELECT count(*) FROM building",
    "households": "SELECT count(*) FROM household",
    "mailboxes": "SELECT count(*) FROM mailbox",
}


def status_report(conn) -> dict:
    """Inventory counts, ledger state counts and the latest pass per mailbox."""
    out = {}
    with conn, conn.cursor() as cur:
        for key, sql in STATUS_SQL.items():
            cur.execute(sql)
            out[key] = cur.fetchone()[0]
        cur.execute("SELECT s.name, count(m.*), coalesce(sum(m.size), 0) FROM message_state s"
                    " LEFT JOIN message m ON m.state = s.code GROUP BY s.code, s.name ORDER BY s.code")
        out["messages"] = {name: {"count": n, "bytes": int(b)} for name, n, b in cur.fetchall()}
        cur.execute("SELECT count(DISTINCT mailbox_id) FROM pass WHERE status = 'finished'")
        out["mailboxes_with_a_finished_pass"] = cur.fetchone()[0]
        cur.execute("SELECT kind, status, count(*) FROM pass GROUP BY kind, status ORDER BY kind, status")
        out["passes"] = [{"kind": k, "status": s, "count": n} for k, s, n in cur.fetchall()]
        cur.execute("SELECT state, count(*) FROM folder GROUP BY state ORDER BY state")
        out["folders"] = dict(cur.fetchall())
    return out


def cmd_status(args) -> int:
    conn = db.connect(args.db)
    try:
        report = status_report(conn)
    finally:
        conn.close()
    if args.json:
        _print_json(report)
        return 0
    print(f"inventory: {report['source_systems']} source systems, {report['domains']} domains, "
          f"{report['buildings']} buildings, {report['households']} households, {report['mailboxes']} mailboxes")
    print(f"mailboxes with a finished pass: {report['mailboxes_with_a_finished_pass']}")
    print("ledger:")
    for name, v in report["messages"].items():
        print(f"  {name:<16} {v['count']:>10} messages {v['bytes'] / 1e6:>12.1f} MB")
    for p in report["passes"]:
        print(f"  pass {p['kind']:<9} {p['status']:<9} {p['count']}")
    return 0


# -- copy -------------------------------------------------------------------------------------
class _Progress:
    """A one-line progress display on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.started = time.monotonic()

    def __call__(self, s) -> None:
        if not self.enabled:
            return
        took = max(time.monotonic() - self.started, 1e-6)
        done = s.copied + s.already
        sys.stderr.write(f"\r{s.mailbox}: {done}/{s.source_messages} messages, {s.bytes / 1e6:.1f} MB, "
                         f"{s.copied / took:.0f} msg/s, refused {s.refused}   ")
        sys.stderr.flush()


def cmd_copy(args) -> int:
    from .imap.endpoint import endpoint_from_env
    from .imap.errors import AuthError, ConfigError
    from .jobs import UnknownMailbox, copy_one

    conn = db.connect(args.db)
    progress = _Progress(args.progress or sys.stderr.isatty())
    try:
        summary = copy_one(conn, args.mailbox, args.pass_kind, resolve=endpoint_from_env,
                           dest_conn_id=args.dest_conn, progress=progress,
                           batch_messages=args.batch_messages)
    except (UnknownMailbox, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthError as exc:
        print(f"error (not retried): {exc}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    if progress.enabled:
        sys.stderr.write("\n")
    _print_json(summary.as_dict())
    return 0 if summary.refused == 0 else 4


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailshift", description="Zero-loss mailbox migration for ISPs.")
    p.add_argument("--db", help="mailshift database URL (default: $MAILSHIFT_DB_URL)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="apply pending migrations").set_defaults(func=cmd_db_upgrade)
    dbp.add_parser("status", help="applied and pending migrations").set_defaults(func=cmd_db_status)

    inv = sub.add_parser("inventory", help="inventory of buildings, households, mailboxes")
    invs = inv.add_subparsers(dest="inventory_command", required=True)
    load = invs.add_parser("load", help="validate and load legacy exports (all or nothing)")
    load.add_argument("export_dir")
    load.set_defaults(func=cmd_inventory_load)

    st = sub.add_parser("status", help="inventory and ledger counts")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    cp = sub.add_parser("copy", help="one copy pass of one mailbox")
    cp.add_argument("mailbox", help="address or mailbox id")
    cp.add_argument("--pass", dest="pass_kind", default="prestage", choices=("prestage", "delta", "final", "drain"))
    cp.add_argument("--dest-conn", default="mailshift_dest",
                    help="connection id of the destination (env AIRFLOW_CONN_<ID>)")
    cp.add_argument("--batch-messages", type=int, default=250)
    cp.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    cp.set_defaults(func=cmd_copy)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except db.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
