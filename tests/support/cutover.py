"""Helpers for the cutover tests: the lab's DNS provider, restoring the lab zone, proof rows."""

from __future__ import annotations

import contextlib

from lab.config import LabConfig
from lab.zone import set_mx
from mailshift.protocols.dns import Rfc2136Provider

ORIGINAL_MX = "10 mx-old.lab.mailshift.test."
ORIGINAL_TTL = 3600


def lab_provider(cfg: LabConfig) -> Rfc2136Provider:
    return Rfc2136Provider(cfg.dns_host, cfg.dns_port, cfg.tsig_key_name, cfg.tsig_secret, cfg.tsig_algorithm,
                           ns_port=cfg.dns_port)


def force_mx(cfg: LabConfig, rdatas: list[str], ttl: int) -> None:
    """Set the lab zone's MX unconditionally (what "someone else changed it" looks like)."""
    set_mx(cfg, rdatas, ttl)


@contextlib.contextmanager
def restored_zone(cfg: LabConfig):
    """Start from `MX 10 mx-old` TTL 3600 (a demo may have swapped it) and put it back afterwards."""
    force_mx(cfg, [ORIGINAL_MX], ORIGINAL_TTL)
    try:
        yield
    finally:
        force_mx(cfg, [ORIGINAL_MX], ORIGINAL_TTL)
        rr = lab_provider(cfg).get_rrset(cfg.dns_zone, cfg.dns_zone)
        assert rr.rdatas == (ORIGINAL_MX,) and rr.ttl == ORIGINAL_TTL


def record_pass(conn, mailbox_id: int, kind: str = "prestage", status: str = "finished") -> int:
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO pass (mailbox_id, kind, status, started_at, finished_at) VALUES"
                    " (%s, %s, %s, now(), CASE WHEN %s = 'running' THEN NULL ELSE now() END) RETURNING id",
                    (mailbox_id, kind, status, status))
        return cur.fetchone()[0]


def record_proof(conn, mailbox_id: int, verdict: str = "proven", kind: str = "pre_cutover",
                 blocking_finding: bool = False) -> int:
    """A verify_run + proof row as the verifier writes them (for gate tests without mail)."""
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO verify_run (scope, scope_id, kind, status, finished_at) VALUES"
                    " ('mailbox', %s, %s, 'finished', now()) RETURNING id", (str(mailbox_id), kind))
        run = cur.fetchone()[0]
        if blocking_finding:
            cur.execute("INSERT INTO reconciliation (verify_run_id, mailbox_id, level, src_count, dest_count, ok)"
                        " VALUES (%s, %s, 'mailbox', 1, 0, false) RETURNING id", (run, mailbox_id))
            rec = cur.fetchone()[0]
            cur.execute("INSERT INTO reconciliation_finding (reconciliation_id, mailbox_id, kind, src_folder, src_uid,"
                        " blocking, detail) VALUES (%s, %s, 'missing_at_dest', 'INBOX', 7, true, 'not copied')",
                        (rec, mailbox_id))
        matched = 0 if verdict == "failed" else 1
        cur.execute("INSERT INTO proof (mailbox_id, verify_run_id, kind, verdict, src_messages, dest_messages, matched,"
                    " ledger_as_of) VALUES (%s, %s, %s, %s, 1, %s, %s, now()) RETURNING id",
                    (mailbox_id, run, kind, verdict, matched, matched))
        return cur.fetchone()[0]


def put_plain(cfg: LabConfig, server: str, login: str, n: int, tag: str = "m") -> list[bytes]:
    """APPEND `n` small distinct messages to the INBOX of `login` on a lab server (as the MTA would
    deliver them); returns their bytes."""
    import datetime as dt
    import uuid

    from mailshift.protocols.imap.append import OutgoingMessage, multiappend
    from support.mail import imap

    out = []
    with imap(cfg, server, login) as c:
        for i in range(n):
            mid = f"<{tag}-{i}-{uuid.uuid4().hex}@lab.mailshift.test>"
            raw = (f"From: sender@example.net\r\nTo: {login}@lab.mailshift.test\r\nSubject: {tag} {i}\r\n"
                   f"Message-ID: {mid}\r\nDate: Mon, 1 Jul 2024 10:00:00 +0900\r\n\r\nbody {tag} {i}\r\n").encode()
            when = dt.datetime(2024, 7, 1, 10, 0, i, tzinfo=dt.UTC)
            assert multiappend(c, "INBOX", [OutgoingMessage((), when, raw)]).ok
            out.append(raw)
    return out
