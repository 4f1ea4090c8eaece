"""`mailshift db upgrade|status`: the schema migrations of the mailshift database."""

from __future__ import annotations

from mailshift.cli.output import print_json


def cmd_db_upgrade(args) -> int:
    """Apply pending migrations (idempotent) and say which were applied."""
    from mailshift.store import migrate

    applied = migrate.upgrade(args.db)
    print("applied: " + (", ".join(applied) if applied else "nothing (already current)"))
    print(f"current: {migrate.current(args.db)}")
    return 0


def cmd_db_status(args) -> int:
    from mailshift.store import migrate

    print_json(migrate.status(args.db))
    return 0


def register(sub) -> None:
    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="apply pending migrations").set_defaults(func=cmd_db_upgrade)
    dbp.add_parser("status", help="applied and pending migrations").set_defaults(func=cmd_db_status)
