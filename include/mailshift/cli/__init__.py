"""`mailshift ...`: the operator's command line, one module per command group.

Machine-readable output is JSON (or CSV) on stdout, progress on stderr; an operational failure
is one line `mailshift: error: ...` and an exit code from mailshift.cli.errors, never a
traceback. Each group module has `register(subparsers)`; this module only assembles them."""

from __future__ import annotations

import argparse
import logging

from mailshift.cli import audit, check, copy, db, errors, inventory, notices, plan, status, verify

#: command groups in the order `mailshift --help` lists them
GROUPS = (db, inventory, check, status, copy, verify, plan, audit, notices)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailshift", description="Zero-loss mailbox migration for ISPs.",
                                epilog=errors.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", help="mailshift database URL (default: $MAILSHIFT_DB_URL)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse (argparse exits 2 on bad usage), run the command, map failures to one line + code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return errors.run(args.func, args)


__all__ = ["build_parser", "main"]
