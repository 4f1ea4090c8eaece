"""The destination capability probe (preflight, per destination): what the new provider really
does, found by trying on a test account, stored in `dest_capability` and shown in the audit
report. Nothing is assumed: a question the probe could not answer stays NULL ("not probed").

On the test account (its INBOX should be empty; everything the probe adds it removes):
- POP3 UIDLs: APPEND a message carrying `X-UIDL: mailshift-probe-<token>` over IMAP, list UIDLs
  over POP3: `keeps_uidl` is true only when the token is the message's UIDL (the provider
  keeps a migrated message's UIDL, so POP3 clients that leave mail on the server do not
  download everything again);
- APPENDLIMIT (RFC 7889) from the capabilities; size behaviour: a message one byte over the
  limit is APPENDed and must be refused (`over_limit_refused`, the server's answer);
- folder-name rules: namespace prefix and separator, and whether a folder with non-ASCII
  characters, with a dot, and nested under another can be created (each is deleted again);
- quota: GETQUOTAROOT INBOX (root, storage limit and usage) when the server offers QUOTA.

When UIDLs are not kept, `notices.households` puts every POP3 household whose leave-on-server
is yes or unknown on the notice list, with that reason, before the gate.
"""
from __future__ import annotations

import contextlib
import getpass
import secrets
from email.message import EmailMessage

from mailshift.protocols.endpoint import Endpoint
from mailshift.protocols.imap.session import close_session, open_session
from mailshift.protocols.pop3 import open_pop3
from mailshift.store import audit as audit_store

FOLDER_TRIALS = {"non_ascii": "Mailshift-probe-日本語", "dot": "Mailshift.probe",
                 "nested": "Mailshift-probe{sep}child"}


def _message(token: str, size: int = 0) -> bytes:
    m = EmailMessage()
    m["From"] = "mailshift-probe@invalid"
    m["To"] = "mailshift-probe@invalid"
    m["Subject"] = f"mailshift destination probe {token}"
    m["X-UIDL"] = f"mailshift-probe-{token}"
    m.set_content("probe\n" + "x" * max(0, size))
    return m.as_bytes()


def _appendlimit(caps) -> int | None:
    for c in caps:
        c = c.decode() if isinstance(c, bytes) else str(c)
        if c.upper().startswith("APPENDLIMIT="):
            with contextlib.suppress(ValueError):
                return int(c.split("=", 1)[1])
    return None


def _remove_token(client, token: str) -> None:
    client.select_folder("INBOX")
    uids = client.search(["HEADER", "X-UIDL", f"mailshift-probe-{token}"])
    if uids:
        client.delete_messages(uids)
        client.expunge()


def _uidl_kept(endpoint: Endpoint, account: str, client, token: str) -> tuple[bool | None, str]:
    client.append("INBOX", _message(token))
    if not endpoint.pop3_port:
        return None, "the destination connection has no POP3 port: UIDLs not probed"
    with open_pop3(endpoint, account) as pop:
        uidls = [line.split()[1].decode("utf-8", "replace") for line in pop.uidl()[1]]
    want = f"mailshift-probe-{token}"
    if want in uidls:
        return True, f"a message with X-UIDL {want} is listed with that UIDL"
    return False, (f"a message with X-UIDL {want} is listed as {uidls[-1] if uidls else 'nothing'}:"
                   " migrated messages get new UIDLs")


def _size(client, limit: int | None, token: str) -> dict:
    if not limit:
        return {"appendlimit": None, "over_limit_refused": None}
    try:
        client.append("INBOX", _message(token + "-big", limit + 1))
    except Exception as exc:  # noqa: BLE001 - the refusal IS the answer being recorded
        return {"appendlimit": limit, "over_limit_refused": True, "answer": str(exc)[:200]}
    _remove_token(client, token + "-big")
    return {"appendlimit": limit, "over_limit_refused": False,
            "answer": "a message over APPENDLIMIT was accepted"}


def _folders(client) -> dict:
    ns = client.namespace()
    personal = ns.personal[0] if ns.personal else ("", "/")
    prefix, sep = personal[0] or "", personal[1] or "/"
    rules = {"prefix": prefix, "separator": sep}
    for key, name in FOLDER_TRIALS.items():
        full = prefix + name.format(sep=sep)
        try:
            client.create_folder(full)
            rules[key] = True
        except Exception as exc:  # noqa: BLE001 - a refused name is the rule being probed
            rules[key] = False
            rules[key + "_answer"] = str(exc)[:200]
            continue
        with contextlib.suppress(Exception):
            client.delete_folder(full)
        if key == "nested":
            with contextlib.suppress(Exception):
                client.delete_folder(prefix + name.split("{sep}")[0])
    return rules


def _quota(client) -> dict:
    if b"QUOTA" not in set(client.capabilities()):
        return {"quota": None, "answer": "no QUOTA capability"}
    try:
        roots = client.get_quota_root("INBOX")
    except Exception as exc:  # noqa: BLE001
        return {"quota": None, "answer": str(exc)[:200]}
    quotas = roots[1] if isinstance(roots, tuple) else roots
    return {"quota": [{"root": q.quota_root, "resource": q.resource, "usage": q.usage,
                       "limit": q.limit} for q in quotas]}


def probe(endpoint: Endpoint, account: str, destination: str) -> dict:
    """Try everything on the test account; the capability row (not stored)."""
    token = secrets.token_hex(6)
    client = open_session(endpoint, account)
    try:
        caps = client.capabilities()
        limit = _appendlimit(caps)
        try:
            keeps, detail = _uidl_kept(endpoint, account, client, token)
        finally:
            _remove_token(client, token)
        size = _size(client, limit, token)
        folders = _folders(client)
        quota = _quota(client)
    finally:
        close_session(client)
    return {"destination": destination, "keeps_uidl": keeps, "uidl_detail": detail,
            "appendlimit": limit, "folder_rules": folders, "size_behaviour": size,
            "quota_behaviour": quota, "test_account": account}


def probe_and_store(conn, endpoint: Endpoint, account: str, destination: str,
                    probed_by: str | None = None) -> dict:
    """Probe, then store the answer for the destination (replacing an older one)."""
    cap = probe(endpoint, account, destination)
    cap["probed_by"] = probed_by or getpass.getuser()
    with conn:
        audit_store.save_capability(conn, cap)
    return cap
