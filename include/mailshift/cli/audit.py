"""`mailshift audit addresses|pop3-logs|rules|report`: the pre-migration audit that finds the
households the migration will affect before any mail moves."""

from __future__ import annotations

import sys
import time
from contextlib import closing

from mailshift.cli import display, errors
from mailshift.cli.output import csv_to, print_json
from mailshift.store import db


def cmd_audit_addresses(args) -> int:
    """Audit every inventory address; store findings and renames (idempotent)."""
    from mailshift.customers import audit
    from mailshift.store import audit as store

    with closing(db.connect(args.db)) as conn:
        stats = audit.run_address_audit(conn, building=args.building, domain=args.domain,
                                        alias_days=args.alias_days)
        stats["renames_list"] = store.renames(conn, args.building, args.domain) if args.list else None
    print_json(stats)
    return errors.OK


def _parse_with_progress(pop3logs, args):
    """pop3logs.parse_files, file by file, with a bar over the files' bytes."""
    import os

    parser = pop3logs.Pop3LogParser(year=args.year)
    total = sum(os.path.getsize(f) for f in args.files)
    with display.progress("reading POP3 logs", total=total, unit="bytes", enabled=display.wanted_by(args)) as bar:
        for i, path in enumerate(args.files, 1):
            parser.feed_file(path)
            bar.advance(os.path.getsize(path), note=f"file {i}/{len(args.files)}")
    return parser.result


def cmd_audit_pop3_logs(args) -> int:
    """Parse first (no database needed for --dry-run), then store the usage per login."""
    from mailshift.customers import audit, pop3logs

    t0 = time.monotonic()
    result = _parse_with_progress(pop3logs, args)
    el = time.monotonic() - t0
    print(f"parsed {result.lines} lines in {el:.1f}s ({result.lines / max(el, 1e-9):,.0f} lines/s),"
          f" {result.malformed} malformed", file=sys.stderr)
    for name, fs in result.by_file.items():
        if fs.malformed:
            print(f"  {name}: {fs.malformed} malformed of {fs.lines} lines ({fs.kind})", file=sys.stderr)
        elif not fs.events and fs.kind in ("log", "rawlog"):
            print(f"  {name}: no POP3 events in {fs.lines} lines (not a Dovecot/Courier POP3 log "
                  "or rawlog?)", file=sys.stderr)
    if args.dry_run:
        print_json({"lines": result.lines, "malformed": result.malformed,
                    "malformed_samples": result.malformed_samples,
                    "files": {f: vars(fs) for f, fs in result.by_file.items()},
                    "usage": {k: u.as_dict() for k, u in sorted(result.usage.items())}})
        return errors.OK
    with closing(db.connect(args.db)) as conn:
        stats = audit.run_pop3_audit(conn, result, source_system=args.source_system, inputs=args.files)
    print_json(stats)
    return errors.OK


def cmd_audit_rules(args) -> int:
    from mailshift.customers import audit

    with closing(db.connect(args.db)) as conn:
        stats = audit.run_rules_audit(conn, args.export_dir, args.dest)
    print_json(stats)
    return errors.OK


def cmd_audit_waive(args) -> int:
    """A person accepts an unknown (e.g. pop3_last_unknown) of a building or one mailbox, by name."""
    from mailshift.customers import audit

    with closing(db.connect(args.db)) as conn:
        res = audit.waive(conn, args.kind, building=args.building, by=args.by, reason=args.reason,
                          mailbox=args.mailbox)
    print_json(res)
    return errors.OK


def cmd_audit_probe_destination(args) -> int:
    """Try the destination on a test account (UIDLs via X-UIDL, APPENDLIMIT, folder names,
    size and quota) and store what it does; exit 1 when it does not keep POP3 UIDLs."""
    from mailshift.customers import provider_probe
    from mailshift.protocols.endpoint import endpoint_from_env

    endpoint = endpoint_from_env(args.destination)
    with closing(db.connect(args.db)) as conn:
        cap = provider_probe.probe_and_store(conn, endpoint, args.account, args.destination)
    print_json(cap)
    return errors.OK if cap["keeps_uidl"] is not False else errors.NO


def cmd_audit_move_rules(args) -> int:
    """Install the legacy rules at the destination over ManageSieve, read them back, compare;
    exit 1 when a rule could not move or the comparison finds one lost (on the notice list)."""
    import tempfile

    from mailshift.customers import audit
    from mailshift.protocols.endpoint import endpoint_from_env

    endpoint = endpoint_from_env(args.destination)
    with closing(db.connect(args.db)) as conn, tempfile.TemporaryDirectory() as work:
        stats = audit.move_rules(conn, args.export_dir, endpoint, port=args.sieve_port, work_dir=work)
    print_json(stats)
    return errors.OK if not stats["findings"] else errors.NO


def cmd_audit_report(args) -> int:
    from mailshift.customers import reports

    if (args.building is None) == (args.wave is None):
        return errors.usage("give a BUILDING or --wave N")
    with closing(db.connect(args.db)) as conn:
        rows = reports.finding_counts(conn, building=args.building, wave=args.wave)
    if args.csv:
        csv_to(args.csv, reports.write_csv, rows, "rows")
    else:
        print_json(rows)
    return errors.OK


def register(sub) -> None:
    au = sub.add_parser("audit", help="pre-migration audit: addresses, POP3 logs, rules, reports")
    aus = au.add_subparsers(dest="audit_command", required=True)
    a = aus.add_parser("addresses", help="audit every inventory address (dot-atom, quoted, length, "
                                         "case-folded duplicates); store findings and renames")
    a.add_argument("--building")
    a.add_argument("--domain")
    a.add_argument("--alias-days", type=int, default=180, help="old address keeps delivering this long")
    a.add_argument("--list", action="store_true", help="print the rename records too")
    a.set_defaults(func=cmd_audit_addresses)
    a = aus.add_parser("pop3-logs", help="parse legacy POP3 logs (Dovecot, Courier; .gz/.xz ok) and "
                                         "Dovecot rawlogs (*.in files or directories)")
    a.add_argument("files", nargs="+", help="log files, rawlog files or directories")
    a.add_argument("--source-system", help="logins belong to this source system")
    a.add_argument("--year", type=int, help="year for syslog timestamps without one (default: this year)")
    a.add_argument("--dry-run", action="store_true", help="print the usage, store nothing")
    display.add_flag(a)
    a.set_defaults(func=cmd_audit_pop3_logs)
    a = aus.add_parser("rules", help="inventory forward/auto-reply rules from an export dir")
    a.add_argument("export_dir", help="<dir>/<address or login>/{*.sieve,.forward,.qmail*}")
    a.add_argument("--dest", help="the destination's rules, same layout: compare")
    a.set_defaults(func=cmd_audit_rules)
    a = aus.add_parser("waive", help="a person accepts an unknown (KIND ending in _unknown), by name")
    a.add_argument("kind", help="e.g. pop3_last_unknown")
    a.add_argument("--building", required=True)
    a.add_argument("--mailbox", help="one address of the building (default: the whole building)")
    a.add_argument("--by", required=True, help="the name of the person who accepts it")
    a.add_argument("--reason", required=True)
    a.set_defaults(func=cmd_audit_waive)
    a = aus.add_parser("probe-destination", help="try the destination on a test account: POP3 UIDLs "
                                                 "kept (X-UIDL), APPENDLIMIT, folder names, size, quota")
    a.add_argument("--account", required=True, help="the test account's login at the destination")
    a.add_argument("--destination", default="mailshift_dest", help="its connection id (default mailshift_dest)")
    a.set_defaults(func=cmd_audit_probe_destination)
    a = aus.add_parser("move-rules", help="install legacy Sieve/.forward/.qmail rules at the destination "
                                          "(ManageSieve), read back, compare")
    a.add_argument("export_dir", help="<dir>/<address or login>/{*.sieve,.forward,.qmail*}")
    a.add_argument("--destination", default="mailshift_dest", help="its connection id (default mailshift_dest)")
    a.add_argument("--sieve-port", type=int, default=4190, help="the destination's ManageSieve port")
    a.set_defaults(func=cmd_audit_move_rules)
    a = aus.add_parser("report", help="finding counts per building or wave")
    a.add_argument("building", nargs="?")
    a.add_argument("--wave", type=int)
    a.add_argument("--csv", nargs="?", const="-", help="write CSV (to FILE, or stdout)")
    a.set_defaults(func=cmd_audit_report)
