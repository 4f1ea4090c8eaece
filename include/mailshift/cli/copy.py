"""`mailshift copy MAILBOX --pass KIND`: one copy pass of one mailbox, as the DAG task runs it,
for operators re-running or debugging a single mailbox. JSON summary on stdout."""

from __future__ import annotations

from contextlib import closing

from mailshift.cli import display, errors
from mailshift.cli.output import print_json
from mailshift.rules.states import PASS_KINDS
from mailshift.store import db


def source_count(source, login: str) -> int | None:
    """How many messages the pass will read at the source, counted before it starts (the bar's
    denominator): STATUS MESSAGES of every selectable folder, or the UIDL list of a POP3-only
    server. Read-only. None when it cannot be counted: the bar then follows the copier's count,
    which grows folder by folder."""
    from mailshift.protocols.imap.session import close_session, open_session
    from mailshift.protocols.pop3 import read_uidls

    try:
        if not source.imap:
            return len(read_uidls(source, login))
        client = open_session(source, login)
        try:
            total = 0
            for flags, _sep, name in client.list_folders():
                names = {(f.decode() if isinstance(f, bytes) else str(f)).lower() for f in flags}
                if names & {"\\noselect", "\\nonexistent"}:
                    continue
                status = client.folder_status(name, ["MESSAGES"])
                total += int(status.get(b"MESSAGES", status.get("MESSAGES", 0)))
            return total
        finally:
            close_session(client)
    except Exception:  # noqa: BLE001 - a progress nicety never fails the copy; the copy reports the cause
        return None


def cmd_copy(args) -> int:
    """Exit 1 when the destination refused any message or folder, or stored a message altered
    (the summary says which, the ledger why)."""
    from mailshift.copy.copy_one import copy_one, mailbox_context
    from mailshift.protocols.endpoint import endpoint_from_env

    enabled = display.wanted_by(args)
    with closing(db.connect(args.db)) as conn:
        expected = None
        if enabled:
            ctx = mailbox_context(conn, args.mailbox)
            expected = source_count(endpoint_from_env(ctx.source_conn_id), ctx.mailbox.source_login)
        with display.progress(f"{args.pass_kind} {args.mailbox}", total=expected, enabled=enabled) as bar:
            progress = display.CopyProgress(bar, expected)
            summary = copy_one(conn, args.mailbox, args.pass_kind, resolve=endpoint_from_env,
                               dest_conn_id=args.dest_conn, progress=progress,
                               batch_messages=args.batch_messages, append_lanes=args.append_lanes,
                               max_batches_in_flight=args.in_flight)
            progress(summary)   # the last batch may have been only "already there"
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
    display.add_flag(cp)
    cp.add_argument("--json", action="store_true",
                    help="machine use: the JSON summary only, no progress bar (stdout is JSON either way)")
    cp.set_defaults(func=cmd_copy)
