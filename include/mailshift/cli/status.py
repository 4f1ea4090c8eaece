"""`mailshift status [--progress]`, `lookup`, `report`: the operator's counts and the support
desk's answers, mirrors of the operator UI for people without a browser."""

from __future__ import annotations

import sys
from contextlib import closing

from mailshift.cli import errors
from mailshift.cli.output import print_json, write_csv
from mailshift.store import db

PROGRESS_COLUMNS = ["wave", "name", "status", "buildings", "mailboxes", "mailboxes_copied", "mailboxes_proven",
                    "unproven_mailboxes", "messages_copied", "messages_total", "bytes_copied", "bytes_total",
                    "bytes_per_s", "eta", "eta_note"]
LOOKUP_COLUMNS = ["household_id", "contact_name", "building_id", "domain", "wave_id", "address", "protocol",
                  "migrated", "first_copied_at", "last_copied_at", "last_pass", "messages_copied", "proof_state",
                  "proven_at", "open_exceptions", "notices_sent", "cutover_at"]
NOTICE_SENT = ("sent", "delivered", "acknowledged")


def cmd_status(args) -> int:
    """Inventory and ledger counts, or (--progress) the UI's overview."""
    if args.progress:
        return cmd_status_progress(args)
    from mailshift.store.lookup import status_report

    with closing(db.connect(args.db)) as conn:
        report = status_report(conn)
    if args.json:
        print_json(report)
        return errors.OK
    print(f"inventory: {report['source_systems']} source systems, {report['domains']} domains, "
          f"{report['buildings']} buildings, {report['households']} households, {report['mailboxes']} mailboxes")
    print(f"mailboxes with a finished pass: {report['mailboxes_with_a_finished_pass']}")
    print("ledger:")
    for name, v in report["messages"].items():
        print(f"  {name:<16} {v['count']:>10} messages {v['bytes'] / 1e6:>12.1f} MB")
    for p in report["passes"]:
        print(f"  pass {p['kind']:<9} {p['status']:<9} {p['count']}")
    return errors.OK


def cmd_status_progress(args) -> int:
    """Waves, copied vs total, throughput, ETA; refreshes the summaries first unless told not to."""
    from mailshift.progress import queries
    from mailshift.store import progress as store

    with closing(db.connect(args.db)) as conn:
        if not args.no_refresh:
            store.refresh_changed(conn)
        ov = queries.overview(conn)
    if args.csv:
        write_csv(ov["waves"], PROGRESS_COLUMNS)
        return errors.OK
    if args.json:
        for w in ov["waves"]:
            w.pop("series", None)
        ov["throughput"].pop("history", None)
        print_json({"progress": ov})
        return errors.OK
    t = ov["totals"]
    print(f"mailboxes copied {t['mailboxes_copied']}/{t['mailboxes']}, proven {t['mailboxes_proven']}, "
          f"unproven {t['unproven_mailboxes']}; messages {t['messages_copied']}/{t['messages_total']}; "
          f"{t['bytes_copied'] / 1e6:.1f}/{t['bytes_total'] / 1e6:.1f} MB; open exceptions {t['open_exceptions']}")
    tp = ov["throughput"]
    print(f"throughput (last {tp['window_minutes']} min): {tp['bytes_per_s'] / 1e6:.2f} MB/s, "
          f"{tp['messages_per_s']:.1f} msg/s, {tp['running_passes']} passes running")
    for w in ov["waves"]:
        states = ", ".join(f"{k} {v}" for k, v in w["buildings_by_state"].items() if v)
        print(f"  {w['name']:<12} {w['status']:<9} buildings {w['buildings']} ({states}); mailboxes "
              f"{w['mailboxes_copied']}/{w['mailboxes']} copied, {w['mailboxes_proven']} proven; "
              f"{w['bytes_copied'] / 1e6:.1f}/{w['bytes_total'] / 1e6:.1f} MB; ETA {w['eta'] or '-'} ({w['eta_note']})")
    return errors.OK


def _lookup_rows(res: dict) -> list[dict]:
    """One CSV row per mailbox, with its household's columns and the notices sent to it."""
    rows = []
    for h in res["households"]:
        sent = sum(1 for n in h["notices"] if n["status"] in NOTICE_SENT)
        for m in h["mailboxes"]:
            rows.append({**{k: h[k] for k in ("household_id", "contact_name", "building_id", "domain", "wave_id",
                                               "cutover_at")}, **m, "notices_sent": sent})
    return rows


def _print_households(res: dict) -> None:
    for h in res["households"]:
        print(f"household {h['household_id']} ({h['contact_name']}), building {h['building_id']} "
              f"{h['building_name']}, domain {h['domain']}, wave {h['wave_id']}; MX switched: {h['cutover_at'] or 'no'}")
        for m in h["mailboxes"]:
            print(f"  {m['address']:<40} {m['protocol']:<5} migrated: {'yes' if m['migrated'] else 'not yet'}"
                  f" (first {m['first_copied_at'] or '-'}, last {m['last_copied_at'] or '-'}), "
                  f"{m['messages_copied'] or 0} messages, proof: {m['proof_state']}")
            for r in m["proof_reasons"][:3]:
                print(f"      {r}")
        for n in h["notices"]:
            print(f"  notice {n['campaign']}/{n['kind']} via {n['channel']}: {n['status']} {n['sent_at'] or ''}")


def cmd_lookup(args) -> int:
    """Support desk: a household by mailbox address (or its beginning) or household ID; exit 1 when
    nothing matches, like grep, so a script can tell "not found" from "could not ask"."""
    from mailshift.progress import queries

    with closing(db.connect(args.db)) as conn:
        res = queries.lookup(conn, args.query, contact_details=args.contact_details)
    found = errors.OK if res["households"] else errors.NO
    if args.json:
        print_json(res)
    elif args.csv:
        write_csv(_lookup_rows(res), LOOKUP_COLUMNS)
    elif not res["households"]:
        print(f"no household matches {args.query!r}", file=sys.stderr)
    else:
        _print_households(res)
    return found


def cmd_report(args) -> int:
    """Operator report of one building: one row per mailbox (pass, proof, waivers, exceptions)."""
    from mailshift.errors import UnknownMailbox
    from mailshift.progress import queries
    from mailshift.store import progress as store

    with closing(db.connect(args.db)) as conn:
        if not args.no_refresh:
            store.refresh_changed(conn)
        rep = queries.building_report(conn, args.building)
    if rep is None:
        raise UnknownMailbox(f"no building {args.building!r} in the inventory")
    if args.csv:
        write_csv(rep["mailboxes"], queries.REPORT_COLUMNS)
    elif args.json:
        print_json(rep)
    else:
        b = rep["building"]
        print(f"building {b['id']} {b['name'] or ''}: wave {b['wave_id']}, state {b['state']}, mailboxes "
              f"{b['mailboxes_copied'] or 0}/{b['mailboxes'] or 0} copied, {b['mailboxes_proven'] or 0} proven; "
              f"open exceptions {rep['exceptions_open']}, active waivers {rep['waivers_active']}; "
              f"proof report: {rep['report'] or '-'}")
        for r in rep["mailboxes"]:
            print(f"  {r['address']:<40} {r['messages_copied']:>7} msgs {r['bytes_copied'] / 1e6:>9.1f} MB "
                  f"pass {r['last_pass_kind'] or '-'}/{r['last_pass_status'] or '-'} proof {r['proof_state'] or '-'}")
    return errors.OK


def register(sub) -> None:
    st = sub.add_parser("status", help="inventory and ledger counts")
    st.add_argument("--json", action="store_true")
    st.add_argument("--progress", action="store_true",
                    help="the operator UI's overview: waves, copied vs total, throughput, ETA (refreshes summaries)")
    st.add_argument("--csv", action="store_true", help="with --progress: one CSV row per wave")
    st.add_argument("--no-refresh", action="store_true", help="with --progress: do not refresh the summaries")
    st.set_defaults(func=cmd_status)

    lk = sub.add_parser("lookup", help="support desk: a household by mailbox address (or prefix) or household ID "
                                       "(exit 1: no match)")
    lk.add_argument("query", metavar="QUERY", help="household ID, mailbox address, contact name, phone, or the "
                                                 "beginning (3+ characters) of an address, name or postal address")
    lk.add_argument("--contact-details", action="store_true", help="also print phone and postal address")
    g = lk.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    lk.set_defaults(func=cmd_lookup)

    rp = sub.add_parser("report", help="operator report of a building: mailboxes, passes, proof (CSV or JSON)")
    rp.add_argument("building", metavar="BUILDING")
    g = rp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    rp.add_argument("--no-refresh", action="store_true", help="do not refresh the progress summaries first")
    rp.set_defaults(func=cmd_report)
