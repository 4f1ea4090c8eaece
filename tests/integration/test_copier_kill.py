"""Exactly-once under SIGKILL: the copier is killed at random moments and at the exact points
between an APPEND and its ledger commit, restarted each time, and the destination ends with
every source message exactly once (read back over IMAP, compared by SHA-256, flags and date)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import signal

import psycopg2
import pytest

from lab.connections import imap_uri
from lab.seed import server_folder_name
from mailshift.copy import failpoints
from mailshift.copy.copier import CopyOptions, MailboxRef, copy_mailbox
from mailshift.protocols.endpoint import parse_endpoint
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from mailshift.rules import states
from mailshift.store.ledger import CopyStore
from support.mail import add_mailbox, fresh_database, imap, pop3_uidls, snapshot, unique_login

pytestmark = pytest.mark.integration

FOLDERS = ("INBOX", "Archive", "仕事")


def _messages(rng: random.Random, start: int, count: int):
    for i in range(start, start + count):
        body = rng.randbytes(rng.choice((200, 900, 3000, 12000))).hex().encode()
        raw = (f"From: a{i}@example.jp\r\nSubject: kill test {i}\r\n\r\n").encode() + body + b"\r\n"
        if i % 17 == 0:  # byte-identical twins must both arrive, once each
            raw = b"Subject: twin\r\n\r\nsame bytes\r\n"
        flags = (b"\\Seen",) if i % 3 else ()
        yield FOLDERS[i % len(FOLDERS)], OutgoingMessage(flags, dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
                                                         + dt.timedelta(minutes=i), raw)


def _put(cfg, server, login, batch):
    s = cfg.servers[server]
    by_folder = {}
    for folder, msg in batch:
        by_folder.setdefault(server_folder_name(folder, s.separator, s.prefix), []).append(msg)
    with imap(cfg, server, login) as c:
        for name, msgs in by_folder.items():
            if name != "INBOX" and not c.folder_exists(name):
                c.create_folder(name)
            assert multiappend(c, name, msgs).ok


def _child(dsn, cfg, mb, opts, failpoint):
    if failpoint:
        failpoints.arm(*failpoint)
    conn = psycopg2.connect(dsn)
    ref = MailboxRef(mb.id, mb.address, mb.source_login, mb.dest_login, mb.protocol)
    copy_mailbox(CopyStore(conn), ref, parse_endpoint(imap_uri(cfg, mb.source)),
                 parse_endpoint(imap_uri(cfg, "dest")), opts)
    conn.close()
    os._exit(0)


def _run_child(ctx, dsn, cfg, mb, opts, failpoint=None, kill_after=None):
    """Returns 'done', 'killed' (by us) or 'died' (failpoint)."""
    p = ctx.Process(target=_child, args=(dsn, cfg, mb, opts, failpoint))
    p.start()
    p.join(timeout=kill_after)
    if p.exitcode is None:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        return "killed"
    if p.exitcode == 0:
        return "done"
    assert p.exitcode == -signal.SIGKILL, f"copier crashed with exit code {p.exitcode}"
    return "died"


def _assert_exactly_once(cfg, db, mb, strip_x_uidl=False):
    src = snapshot(cfg, mb.source, mb.source_login)
    dst = snapshot(cfg, "dest", mb.dest_login, strip_x_uidl=strip_x_uidl)
    for folder, items in src.items():
        assert dst.get(folder) == items, f"{folder}: missing {items - dst.get(folder)}, extra {dst.get(folder) - items}"
    with db, db.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM message WHERE mailbox_id = %s GROUP BY state", (mb.id,))
        assert dict(cur.fetchall()) == {states.COPIED: sum(sum(c.values()) for c in src.values())}
        cur.execute("SELECT count(*) FROM (SELECT f.dest_name, m.dest_uid FROM message m JOIN folder f"
                    " ON f.id = m.folder_id WHERE m.mailbox_id = %s GROUP BY 1, 2 HAVING count(*) > 1) d",
                    (mb.id,))
        assert cur.fetchone()[0] == 0, "two ledger rows claim one destination message"


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(lab_config):
    cfg = lab_config
    rng = random.Random(20261126)
    ctx = multiprocessing.get_context("fork")
    opts = CopyOptions(batch_messages=6, intent_grace_seconds=0.3, max_attempts=2, backoff_seconds=0.1)
    with fresh_database(cfg) as dsn:
        db = psycopg2.connect(dsn)
        mb = add_mailbox(db, cfg, "src-a", unique_login("k"), "imap")
        made = 0
        _put(cfg, "src-a", mb.source_login, list(_messages(rng, made, 600)))
        made = 600
        kills, outcomes = 0, []
        while kills < 60:
            outcome = _run_child(ctx, dsn, cfg, mb, opts, kill_after=rng.uniform(0.03, 0.5))
            outcomes.append(outcome)
            kills += outcome == "killed"
            if outcome == "done":  # everything copied: new mail arrives, keep killing
                _put(cfg, "src-a", mb.source_login, list(_messages(rng, made, 150)))
                made += 150
        assert _run_child(ctx, dsn, cfg, mb, opts) == "done"
        assert kills >= 60
        _assert_exactly_once(cfg, db, mb)
        db.close()


@pytest.mark.parametrize("point", ["after_intents", "after_append", "after_mark_copied"])
def test_kill_between_append_and_ledger_commit(lab_config, point):
    """Targeted kills at each side of the APPEND, on a POP3 mailbox whose bytes are transformed."""
    cfg = lab_config
    rng = random.Random(point)
    ctx = multiprocessing.get_context("fork")
    opts = CopyOptions(batch_messages=5, intent_grace_seconds=0.3, uidl_strategy="x-uidl-header",
                       max_attempts=1)
    with fresh_database(cfg) as dsn:
        db = psycopg2.connect(dsn)
        mb = add_mailbox(db, cfg, "src-b", unique_login("p"), "pop3")
        # 150 messages in batches of 5: enough for six deaths even though up to
        # max_batches_in_flight batches are appended ahead of each settled one
        _put(cfg, "src-b", mb.source_login, [("INBOX", m) for _, m in _messages(rng, 0, 150)])
        deaths = 0
        for countdown in (1, 2, 3, 5, 1, 2):
            deaths += _run_child(ctx, dsn, cfg, mb, opts, failpoint=(point, countdown)) == "died"
        assert deaths >= 5
        assert _run_child(ctx, dsn, cfg, mb, opts) == "done"
        _assert_exactly_once(cfg, db, mb, strip_x_uidl=True)
        assert pop3_uidls(cfg, "dest", mb.dest_login) == pop3_uidls(cfg, "src-b", mb.source_login)
        db.close()
