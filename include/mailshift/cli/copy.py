"""`mailshift copy MAILBOX --pass KIND`: one copy pass of one mailbox, as the DAG task runs it,
for operators re-running or debugging a single mailbox. JSON summary on stdout."""

from __future__ import annotations

import sys
import time
from contextlib import closing

from mailshift.cli import errors
from mailshift.cli.output import print_json
from mailshift.rules.states import PASS_KINDS
from mailshift.store import db


class _Progress:
    """A one-line progress display on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.shown = False
        self.started = time.monotonic()

    def __call__(self, s) -> None:
        if not self.enabled:
            return
        took = max(time.monotonic() - self.started, 1e-6)
        done = s.copied + s.already
        sys.stderr.write(f"\r{s.mailbox}: {done}/{s.source_messages} messages, {s.bytes / 1e6:.1f} MB, "
                         f"{s.copied / took:.0f} msg/s, refused {s.refused}   ")
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        """End the progress line so an error or the summary starts on its own line."""
        if self.shown:
            sys.stderr.write("\n")


def cmd_copy(args) -> int:
    """Exit 1 when the destination refused any message or folder, or stored a message altered
    (the summary says which, the ledger why)."""
    from mailshift.copy.copy_one import copy_one
    from mailshift.protocols.endpoint import endpoint_from_env

    progress = _Progress(args.progress or sys.stderr.isatty())
    try:
        with closing(db.connect(args.db)) as conn:
            summary = copy_one(conn, args.mailbox, args.pass_kind, resolve=endpoint_from_env,
                               dest_conn_id=args.dest_conn, progress=progress,
                               batch_messages=args.batch_messages, append_lanes=args.append_lanes,
                               max_batches_in_flight=args.in_flight)
    finally:
        progress.end()
    print_json(summary.as_dict())
    clean = summary.refused == 0 and summary.altered == 0 and not summary.folders_refused
    return errors.OK if clean else errors.NO


def register(sub) -> None:
    cp = sub.add_parser("copy", help="one copy pass of one mailbox (exit 1: messages/folders refused or altered)")
    cp.add_argument("mailbox", help="address or mailbox id")
    cp.add_argument("--pass", dest="pass_kind", default=PASS_KINDS[0], choices=PASS_KINDS)
    cp.add_argument("--dest-conn", default="mailshift_dest",
                    help="connection id of the destination (env AIRFLOW_CONN_<ID>)")
    cp.add_argument("--batch-messages", type=int, default=250)
    cp.add_argument("--append-lanes", type=int, default=None,
                    help="destination connections appending in parallel, order kept per folder "
                         "(default: the building spec's dest_append_lanes, 3)")
    cp.add_argument("--in-flight", type=int, default=None,
                    help="batches appended or queued at once, bounds memory (default 6)")
    cp.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    cp.set_defaults(func=cmd_copy)
