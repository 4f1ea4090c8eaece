"""`mailshift check SYSTEM`: one screen (or JSON) on whether mailshift can work with a server.

SYSTEM is a source system of the inventory (`src-a`, its connection `mailshift_src_a`) or `dest`
(connection `mailshift_dest`); `--conn` names another connection. The check logs in as one
sample mailbox (`--mailbox`, else the first of that system in the inventory) with the
connection's auth mode and, when that is refused, with the other admin modes; then shows the
capabilities, TLS (version, cipher, certificate), APPENDLIMIT, namespace prefix and separator,
the sample mailbox's folders and message counts, the POP3 UIDL format, and what will not work.
A POP3-only server (`imap=false`) gets its POP3 half only. Read-only: folders are counted with
STATUS and never opened; POP3 sends UIDL only.

Exit 0: nothing blocks; 1: something will not work (listed); the usual codes when the server
cannot be reached at all (cli/errors.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from contextlib import closing

from mailshift.cli import errors
from mailshift.cli.output import print_json
from mailshift.errors import AuthError, ConfigError, MailshiftError
from mailshift.protocols.endpoint import is_loopback

MAX_FOLDERS = 60
CERT_WARN_DAYS = 30
#: (name, pattern, meaning) of UIDL formats known from legacy servers
UIDL_FORMATS = (
    ("dovecot", r"^[0-9a-f]{16}$", "Dovecot default %08Xu%08Xv (IMAP UID and UIDVALIDITY, hex)"),
    ("cyrus", r"^\d+\.\d+$", "Cyrus <UIDVALIDITY>.<UID>"),
    ("courier", r"^UID\d+-\d+$", "Courier UID<n>-<UIDVALIDITY>"),
    ("maildir", r"^\d{9,10}\.[^.]+\..+$", "Maildir file name (time.id.host)"),
    ("numeric", r"^\d+$", "a plain number"),
)


def conn_id_of(system: str) -> str:
    return "mailshift_dest" if system == "dest" else "mailshift_" + system.replace("-", "_").lower()


def uidl_format(uidls: list[str]) -> dict:
    """The format of a server's UIDLs, and whether they keep RFC 1939's rules."""
    fmt = next((f"{name}: {meaning}" for name, pat, meaning in UIDL_FORMATS
                if uidls and all(re.match(pat, u, re.I) for u in uidls)), "unrecognised (see samples)")
    bad = [u for u in uidls if not (0 < len(u) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in u))]
    return {"format": fmt if uidls else "no messages to tell", "samples": uidls[:3], "count": len(uidls),
            "unique": len(set(uidls)) == len(uidls), "rfc1939_ok": not bad}


def _tls_info(client, ep) -> dict:
    info = {"mode": ep.tls, "verify": ep.verify}
    sock = None
    try:
        sock = client.socket()
    except Exception:  # noqa: BLE001 - older imapclient
        sock = getattr(client._imap, "sock", None)
    if sock is None or not hasattr(sock, "version"):
        return info
    info.update(version=sock.version(), cipher=(sock.cipher() or [None])[0])
    cert = sock.getpeercert() or {}
    if cert:
        subject = dict(x[0] for x in cert.get("subject", ()))
        info.update(subject=subject.get("commonName"),
                    names=[v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")],
                    expires=cert.get("notAfter"))
    return info


def try_logins(ep, login: str, password: str | None):
    """(client, auth results): the configured mode first; other admin modes only if it is refused."""
    from mailshift.protocols.imap.session import open_session

    tried = []
    modes = [ep.auth] + [m for m in ("master", "authzid") if m != ep.auth and ep.admin_user]
    for mode in modes:
        try:
            client = open_session(dataclasses.replace(ep, auth=mode), login, password)
        except (AuthError, ConfigError) as exc:
            tried.append({"mode": mode, "ok": False, "error": errors.one_line(exc)})
            continue
        tried.append({"mode": mode, "ok": True})
        return client, tried
    return None, tried


def _folders(client) -> tuple[list[dict], str | None]:
    rows, delim = [], None
    listed = client.list_folders()
    for flags, sep, name in listed[:MAX_FOLDERS]:
        delim = delim or (sep.decode() if isinstance(sep, bytes) else sep)
        row = {"name": name, "flags": [f.decode() if isinstance(f, bytes) else str(f) for f in flags]}
        if not any(str(f).lower() == "\\noselect" for f in row["flags"]):
            st = client.folder_status(name, ["MESSAGES"])
            row["messages"] = st.get(b"MESSAGES", st.get("MESSAGES"))
        rows.append(row)
    return rows, delim


def _namespace(client) -> dict:
    try:
        ns = client.namespace()
    except Exception:  # noqa: BLE001 - NAMESPACE is optional
        return {"supported": False}
    personal = ns.personal[0] if ns.personal else (None, None)
    dec = [x.decode() if isinstance(x, bytes) else x for x in personal]
    return {"supported": True, "prefix": dec[0], "separator": dec[1]}


def imap_report(ep, login: str, password: str | None = None) -> dict:
    """Connect, log in, and describe the server and one mailbox. A POP3-only legacy server
    (`imap=false`) is not an error: mailshift reads it with UIDL, LIST and RETR into INBOX."""
    from mailshift.protocols.imap.session import close_session

    if not ep.imap:
        return {"server": ep.label, "login": login, "offered": False, "auth": [], "auth_mode_that_works": None}
    client, auth = try_logins(ep, login, password)
    out = {"server": ep.label, "login": login, "auth": auth,
           "auth_mode_that_works": next((a["mode"] for a in auth if a["ok"]), None)}
    if client is None:
        return out
    try:
        caps = sorted(c.decode() if isinstance(c, bytes) else str(c) for c in client.capabilities())
        limit = next((c.split("=", 1)[1] for c in caps if c.upper().startswith("APPENDLIMIT=")), None)
        folders, delim = _folders(client)
        out.update(capabilities=caps, tls=_tls_info(client, ep), appendlimit=int(limit) if limit else None,
                   namespace=_namespace(client), separator=delim, folders=folders,
                   messages=sum(f.get("messages") or 0 for f in folders))
    finally:
        close_session(client)
    return out


def pop3_report(ep, login: str, password: str | None = None) -> dict:
    from mailshift.protocols.pop3 import read_uidls

    if ep.pop3_port is None:
        return {"configured": False}
    try:
        entries = read_uidls(ep, login, password)
    except MailshiftError as exc:
        return {"configured": True, "port": ep.pop3_port, "ok": False, "error": errors.one_line(exc)}
    return {"configured": True, "port": ep.pop3_port, "ok": True, **uidl_format([e.uidl for e in entries])}


def wont_work(ep, rep: dict, pop3: dict, today: dt.date | None = None) -> list[str]:
    """What mailshift cannot do with this server, in plain words (empty: nothing)."""
    out = []
    if rep.get("offered") is False:
        return _pop3_wont_work(pop3)
    if not rep.get("auth_mode_that_works"):
        out.append("no login works for the sample mailbox: " + "; ".join(
            f"{a['mode']}: {a.get('error')}" for a in rep["auth"]))
        return out
    if rep["auth"][0]["ok"] is False:
        out.append(f"the connection's auth={ep.auth} is refused; auth={rep['auth_mode_that_works']} works: "
                   "change the connection's extra")
    caps = {c.upper() for c in rep.get("capabilities", ())}
    if ep.tls == "none" and not is_loopback(ep.host):
        out.append(f"tls=none to {ep.host}: passwords and mail would cross the network in clear; use starttls or imaps")
    if not ep.verify:
        out.append("verify=false: the server's certificate is not checked")
    exp = (rep.get("tls") or {}).get("expires")
    if exp:
        left = (dt.datetime.strptime(exp, "%b %d %H:%M:%S %Y %Z").date() - (today or dt.date.today())).days
        if left < CERT_WARN_DAYS:
            out.append(f"the TLS certificate expires in {left} days ({exp})")
    for cap, why in (("UIDPLUS", "no APPENDUID: every appended message is found again by digest search (slow)"),
                     ("MULTIAPPEND", "no MULTIAPPEND: one APPEND per message (slow)"),
                     ("LITERAL+", "no LITERAL+: append lanes wait for every literal")):
        if cap not in caps:
            out.append(why)
    if rep.get("appendlimit") is None and not any(c.startswith("APPENDLIMIT") for c in caps):
        out.append("no APPENDLIMIT: the largest message the server accepts is unknown until it refuses one")
    return out + _pop3_wont_work(pop3)


def _pop3_wont_work(pop3: dict) -> list[str]:
    if pop3.get("configured") and not pop3.get("ok"):
        return [f"POP3: {pop3.get('error')}"]
    if pop3.get("ok") and not (pop3["unique"] and pop3["rfc1939_ok"]):
        return ["POP3 UIDLs are not unique or break RFC 1939: POP3 clients would download everything again"]
    return []


def _sample_login(args, system: str) -> str:
    if args.mailbox:
        return args.mailbox
    from mailshift.store import db, lookup

    with closing(db.connect(args.db)) as conn:
        login = lookup.sample_login(conn, system)
    if not login:
        raise ConfigError(f"no mailbox of {system!r} in the inventory: name one with --mailbox LOGIN")
    return login


def _screen(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(soft_wrap=False)
    imap, tls = r["imap"], r["imap"].get("tls") or {}
    con.print(f"[bold]mailshift check {r['system']}[/] — connection {r['connection']}, server {imap['server']}")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("login (sample)", r["imap"]["login"])
    if imap.get("offered") is False:
        t.add_row("IMAP", "not offered: POP3-only server; mailshift reads it with UIDL, LIST and RETR (never DELE) "
                          "into the destination INBOX, the UIDLs kept")
    else:
        _imap_rows(t, imap, tls)
    p = r["pop3"]
    t.add_row("POP3", "not configured" if not p.get("configured") else
              (f"UIDL {p['format']}, {p['count']:,} messages" + (f"; e.g. {', '.join(p['samples'])}" if p["samples"] else "")
               if p.get("ok") else p.get("error")))
    con.print(t)
    if r["wont_work"]:
        con.print("[bold red]will not work:[/]")
        for w in r["wont_work"]:
            con.print(f"  • {w}", markup=False, highlight=False)
    else:
        con.print("[bold green]nothing blocks mailshift on this server[/]")


def _imap_rows(t, imap: dict, tls: dict) -> None:
    t.add_row("auth that works", str(imap.get("auth_mode_that_works")) + "  (" + ", ".join(
        f"{a['mode']} {'ok' if a['ok'] else 'refused'}" for a in imap["auth"]) + ")")
    t.add_row("TLS", f"{tls.get('mode')} {tls.get('version') or ''} {tls.get('cipher') or ''}".strip()
              + (f"; certificate {tls.get('subject')} until {tls.get('expires')}" if tls.get("expires") else ""))
    t.add_row("capabilities", " ".join(imap.get("capabilities", [])))
    t.add_row("APPENDLIMIT", f"{imap['appendlimit']:,} bytes" if imap.get("appendlimit") else "not advertised")
    ns = imap.get("namespace") or {}
    t.add_row("namespace", f"prefix {ns.get('prefix')!r}, separator {ns.get('separator')!r}"
              if ns.get("supported") else f"NAMESPACE not supported; separator {imap.get('separator')!r}")
    t.add_row("sample mailbox", f"{len(imap.get('folders', []))} folders, {imap.get('messages', 0):,} messages")
    for f in imap.get("folders", [])[:20]:
        t.add_row("", f"  {f['name']}  {f.get('messages', '-')}  {' '.join(f['flags'])}")


def cmd_check(args) -> int:
    from mailshift.protocols.endpoint import endpoint_from_env

    system = args.system
    conn_id = args.conn or conn_id_of(system)
    ep = endpoint_from_env(conn_id)
    login = _sample_login(args, system)
    imap = imap_report(ep, login, args.password)
    pop3 = (pop3_report(ep, login, args.password) if imap.get("auth_mode_that_works") or not ep.imap
            else {"configured": False})
    report = {"system": system, "connection": conn_id, "imap": imap, "pop3": pop3,
              "wont_work": wont_work(ep, imap, pop3)}
    if args.json:
        print_json(report)
    else:
        _screen(report)
    return errors.OK if not report["wont_work"] else errors.NO


def register(sub) -> None:
    ck = sub.add_parser("check", help="can mailshift work with this server? (exit 1: something will not work)")
    ck.add_argument("system", help="a source system id (e.g. src-a) or dest")
    ck.add_argument("--conn", help="connection id (default mailshift_<system>; env AIRFLOW_CONN_<ID>)")
    ck.add_argument("--mailbox", help="login of a sample mailbox (default: the first of SYSTEM in the inventory)")
    ck.add_argument("--password", help="the sample mailbox's own password (only for auth=user)")
    ck.add_argument("--json", action="store_true", help="JSON instead of the screen")
    ck.set_defaults(func=cmd_check)
