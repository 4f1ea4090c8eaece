"""`mailshift inventory load`: validate and load the legacy exports, all or nothing."""

from __future__ import annotations

from contextlib import closing

from mailshift.cli import display
from mailshift.store import db


def cmd_inventory_load(args) -> int:
    """An InventoryError (every problem found, nothing written) reaches main(): exit 2."""
    from mailshift.inventory.load import load_inventory

    with closing(db.connect(args.db)) as conn, \
            display.progress(f"validating and loading {args.export_dir}", enabled=display.wanted_by(args)):
        report = load_inventory(conn, args.export_dir)
    print(report)
    return 0


def register(sub) -> None:
    inv = sub.add_parser("inventory", help="inventory of buildings, households, mailboxes")
    invs = inv.add_subparsers(dest="inventory_command", required=True)
    load = invs.add_parser("load", help="validate and load legacy exports (all or nothing)")
    load.add_argument("export_dir")
    display.add_flag(load)
    load.set_defaults(func=cmd_inventory_load)
