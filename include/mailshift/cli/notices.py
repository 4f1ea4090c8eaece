"""`mailshift notices send|export|record|gate`: the customer-notice campaign, email rounds
through the ISP's relay, letter and call lists, recorded outcomes, and the gate's condition."""

from __future__ import annotations

import dataclasses
from contextlib import closing

from mailshift import settings
from mailshift.cli import errors
from mailshift.cli.output import csv_to, print_json
from mailshift.errors import RecordError
from mailshift.store import db


def cmd_notices_send(args) -> int:
    """One email round (idempotent: households already sent are skipped); exit 1 if any failed. An
    unreachable relay is a TransientError (exit 5): run the round again, it resumes."""
    from mailshift.customers import notices
    from mailshift.protocols.smtp import relay_target

    if (args.building is None) == (args.domain is None):
        return errors.usage("give --building or --domain")
    if args.round < 1:
        return errors.usage(f"ROUND {args.round}: rounds start at 1")
    host, port = relay_target(args.smtp)    # ConfigError (exit 3) when no relay is configured
    with closing(db.connect(args.db)) as conn:
        res = notices.send_round(conn, args.round, building=args.building, domain=args.domain,
                                 smtp_host=host, smtp_port=port, sender=args.sender,
                                 campaign=args.campaign, cutover=args.cutover_date)
    print_json({"sent": len(res.sent), "already_sent": res.skipped_done,
                "not_required": res.not_required, "failed": res.failed})
    return errors.OK if not res.failed else errors.NO


def cmd_notices_export(args) -> int:
    from mailshift.customers import notices

    if (args.building is None) == (args.domain is None):
        return errors.usage("give --building or --domain")
    with closing(db.connect(args.db)) as conn:
        rows = notices.export_list(conn, args.channel.rstrip("s"), building=args.building,
                                   domain=args.domain, campaign=args.campaign)
    csv_to(args.csv or "-", notices.write_csv, rows, "households")
    return errors.OK


def cmd_notices_record(args) -> int:
    """All rows or none: one bad row records nothing and says which rows are wrong."""
    import getpass

    from mailshift.customers import notices

    with open(args.csv_file, encoding="utf-8-sig") as f:
        text = f.read()
    with closing(db.connect(args.db)) as conn:
        try:
            res = notices.record_outcomes(conn, text, recorded_by=args.by or getpass.getuser(),
                                          source=args.csv_file, campaign=args.campaign)
        except RecordError as exc:
            return errors.usage(f"nothing recorded: {exc}")
    print_json(res)
    return errors.OK


def cmd_notices_gate(args) -> int:
    """The notice condition of the cutover gate; exit 1 when it refuses (reasons in the JSON)."""
    from mailshift.customers import notices

    with closing(db.connect(args.db)) as conn:
        reasons = notices.notice_gate_check(conn, args.domain, campaign=args.campaign)
    print_json({"domain": args.domain, "ok": not reasons,
                "reasons": [{**dataclasses.asdict(r), "text": r.text()} for r in reasons]})
    return errors.OK if not reasons else errors.NO


def cmd_notices_client_settings(args) -> int:
    """Write every household's client-settings kit (Thunderbird, Outlook, Apple) under --out."""
    from mailshift.customers import client_settings

    if (args.building is None) == (args.domain is None):
        return errors.usage("give --building or --domain")
    profiles = client_settings.load_profiles(args.profile)
    with closing(db.connect(args.db)) as conn:
        res = client_settings.export_kits(conn, args.out, profiles, building=args.building,
                                          domain=args.domain)
    print_json(res)
    return errors.OK


def _register_send(nos) -> None:
    a = nos.add_parser("send", help="send one email round to every mailbox in scope (idempotent)")
    a.add_argument("round", type=int)
    a.add_argument("--building")
    a.add_argument("--domain")
    a.add_argument("--smtp", help=f"HOST:PORT of the relay (default ${settings.SMTP})")
    a.add_argument("--sender", help="From address (default notices@<domain>)")
    a.add_argument("--cutover-date", help="named in the mail")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=cmd_notices_send)


def register(sub) -> None:
    no = sub.add_parser("notices", help="customer-notice campaigns: email rounds, letter/call lists, outcomes")
    nos = no.add_subparsers(dest="notices_command", required=True)
    _register_send(nos)
    a = nos.add_parser("export", help="letter or call list of the affected households, as CSV")
    a.add_argument("channel", choices=("letters", "calls", "letter", "call"))
    a.add_argument("--building")
    a.add_argument("--domain")
    a.add_argument("--csv", nargs="?", const="-", help="write to FILE (default stdout)")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=cmd_notices_export)
    a = nos.add_parser("record", help="record outcomes from a CSV (household_id,channel,outcome,...)")
    a.add_argument("csv_file")
    a.add_argument("--by", help="who records (default: the OS user)")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=cmd_notices_record)
    a = nos.add_parser("client-settings", help="write each household's mail-program settings "
                                                 "(Thunderbird autoconfig, Outlook Autodiscover, Apple profile)")
    a.add_argument("--building")
    a.add_argument("--domain")
    a.add_argument("--profile", required=True, help="YAML: the destination's hosts, ports, TLS, IMAP prefix")
    a.add_argument("--out", required=True, help="directory: <out>/<household>/<address>/...")
    a.set_defaults(func=cmd_notices_client_settings)
    a = nos.add_parser("gate", help="the cutover gate's notice condition for a domain (exit 1: refused)")
    a.add_argument("domain")
    a.add_argument("--campaign", default="migration")
    a.set_defaults(func=cmd_notices_gate)
