"""`mailshift verify` (independent zero-loss proof of a mailbox or a building) and `mailshift
waive` (a named person's decision that a finding may stand; revocable, kept for the audit)."""

from __future__ import annotations

from contextlib import closing

from mailshift.cli import display, errors
from mailshift.cli.output import print_json
from mailshift.rules import states
from mailshift.store import db


def _verify_building_with_progress(conn, args):
    """verify.verify_building, one mailbox at a time so the bar can move (same run, same calls)."""
    import time

    from mailshift.protocols.endpoint import endpoint_from_env
    from mailshift.store import verification as vstore
    from mailshift.verify.core import building_mailboxes, close_building_run, open_building_run, verify_batch

    started = time.monotonic()
    mailboxes = building_mailboxes(conn, args.building)
    run_id = open_building_run(conn, args.building, args.kind, args.mode, len(mailboxes))
    verdicts, failed = [], {}
    with display.progress(f"verifying {args.building}", total=len(mailboxes), unit="mailboxes",
                          enabled=display.wanted_by(args)) as bar:
        try:
            for mb in mailboxes:
                v, e = verify_batch(conn, run_id, [mb], endpoint_from_env, args.mode, dest_conn_id=args.dest_conn,
                                    kind=args.kind, sample_rate=args.sample_rate)
                verdicts += v
                failed.update(e)
                bar.advance(1, note=f"{len(failed)} could not be verified" if failed else "")
        except BaseException as exc:
            vstore.finish_run(conn, run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
            raise
    return close_building_run(conn, args.building, run_id, verdicts, failed, started, mailboxes=len(mailboxes),
                              reports=args.reports_dir, dsn=args.db)


def _verify_building(conn, args) -> tuple[dict, bool]:
    bv = _verify_building_with_progress(conn, args)
    out = {"building": bv.building_id, "verify_run_id": bv.verify_run_id, "proven": bv.proven,
           "gx_success": bv.gx_success, "report": bv.report_path, "errors": bv.errors,
           "seconds": round(bv.seconds, 2),
           "mailboxes": [{"address": m.address, "state": m.state, "reasons": m.reasons[:20]} for m in bv.mailboxes]}
    return out, bool(bv.proven)


def _verify_mailbox(conn, args) -> tuple[dict, bool]:
    from mailshift.protocols.endpoint import endpoint_from_env
    from mailshift.verify import verify_mailbox

    with display.progress(f"verifying {args.mailbox}", enabled=display.wanted_by(args)):
        v = verify_mailbox(conn, args.mailbox, endpoint_from_env, args.mode, dest_conn_id=args.dest_conn,
                           kind=args.kind, sample_rate=args.sample_rate)
    out = {k: val for k, val in v.as_dict().items() if k != "findings"}
    out["findings"] = [f.label() for f in v.findings]
    return out, v.state in states.PROOF_OK


def cmd_verify(args) -> int:
    """JSON verdict on stdout; exit 1 when not proven (the findings say why)."""
    if (args.mailbox is None) == (args.building is None):
        return errors.usage("name exactly one of MAILBOX (address or id) or --building ID")
    if not 0 < args.sample_rate <= 1:
        return errors.usage(f"--sample-rate {args.sample_rate} must be in (0, 1]")
    with closing(db.connect(args.db)) as conn:
        try:
            out, ok = (_verify_building if args.building is not None else _verify_mailbox)(conn, args)
        except ValueError as exc:
            return errors.usage(str(exc))
    print_json(out)
    return errors.OK if ok else errors.NO


def cmd_waive(args) -> int:
    """Record, revoke or list waivers; WaiverError / UnknownMailbox reach main() (exit 2)."""
    from mailshift.copy.copy_one import mailbox_context
    from mailshift.store.waivers import create_waiver, list_waivers, revoke_waiver

    with closing(db.connect(args.db)) as conn:
        if args.list:
            if args.mailbox is None:
                return errors.usage("--list needs MAILBOX")
            mid = mailbox_context(conn, args.mailbox).mailbox.id
            print_json([dict(w.__dict__, active=w.active, text=w.describe()) for w in list_waivers(conn, [mid])])
            return errors.OK
        if not args.by:
            return errors.usage("--by NAME is required: a waiver is always a named person's decision")
        if args.revoke is not None:
            if args.mailbox is not None or args.reason:
                return errors.usage("--revoke ID takes only --by")
            print(f"revoked {revoke_waiver(conn, args.revoke, args.by).describe()}")
            return errors.OK
        if args.mailbox is None:
            return errors.usage("name the MAILBOX (address or id) the waiver is for")
        w = create_waiver(conn, args.mailbox, args.by, args.reason or "", finding_id=args.finding,
                          folder=args.folder, src_uid=args.uid, dest_folder=args.dest_folder,
                          dest_uid=args.dest_uid, whole_mailbox=args.whole_mailbox,
                          requested_by=args.requested_by)
    print(f"recorded {w.describe()}")
    print("run `mailshift verify` again to refresh the proof row and the building report")
    return errors.OK


def _register_verify(sub) -> None:
    vf = sub.add_parser("verify", help="independent zero-loss verification of a mailbox or a building "
                                       "(exit 1: not proven)")
    vf.add_argument("mailbox", nargs="?", help="address or mailbox id (or use --building)")
    vf.add_argument("--building", help="verify every mailbox of this building, run the GX suite, write the report")
    vf.add_argument("--mode", default="full", choices=("full", "sample"),
                    help="full: SHA-256 of every message; sample: header digest + size for all, full digest "
                         "for a random sample")
    vf.add_argument("--sample-rate", type=float, default=0.02, help="fraction fully digested in sample mode")
    vf.add_argument("--kind", default=states.PRE_CUTOVER, choices=(states.PRE_CUTOVER, states.FINAL))
    vf.add_argument("--reports-dir", help="where HTML reports go (default $MAILSHIFT_REPORTS_DIR or ./reports)")
    vf.add_argument("--dest-conn", default="mailshift_dest",
                    help="connection id of the destination (env AIRFLOW_CONN_<ID>)")
    display.add_flag(vf)
    vf.set_defaults(func=cmd_verify)


def _register_waive(sub) -> None:
    wv = sub.add_parser("waive", help="record (or revoke) a named person's waiver for a finding")
    wv.add_argument("mailbox", nargs="?", help="address or mailbox id")
    wv.add_argument("--by", help="the person approving (or revoking) the waiver")
    wv.add_argument("--reason", help="why the finding may stand")
    wv.add_argument("--requested-by", help="who asked for it (must differ from --by)")
    wv.add_argument("--finding", type=int, help="waive the message/folder a finding (#id) names")
    wv.add_argument("--folder", help="source folder name (the whole folder, or with --uid one message)")
    wv.add_argument("--uid", type=int, help="source UID in --folder")
    wv.add_argument("--dest-folder", help="destination folder of an extra message (with --dest-uid)")
    wv.add_argument("--dest-uid", type=int, help="destination UID of an extra message")
    wv.add_argument("--whole-mailbox", action="store_true", help="waive every finding of the mailbox")
    wv.add_argument("--revoke", type=int, metavar="WAIVER_ID", help="revoke a waiver (kept for the audit)")
    wv.add_argument("--list", action="store_true", help="list the mailbox's waivers")
    wv.set_defaults(func=cmd_waive)


def register(sub) -> None:
    _register_verify(sub)
    _register_waive(sub)
