"""Server faults end in the same exact result: connections cut mid-APPEND and mid-FETCH, the
destination and the source restarted mid-copy, a server answering slowly. The copier
reconnects with backoff; the destination ends with every message exactly once."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from lab.config import LabConfig
from lab.connections import imap_uri
from lab.lab import services
from mailshift.copy.copier import CopyOptions, MailboxRef, copy_mailbox
from mailshift.protocols.endpoint import parse_endpoint
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from mailshift.protocols.imap.session import close_session, open_session
from mailshift.store.ledger import CopyStore
from support.faultproxy import FaultProxy
from support.mail import add_mailbox, fresh_database, imap, ordered_digests, snapshot, unique_login

pytestmark = pytest.mark.integration


def _via(uri: str, port: int) -> str:
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def mailbox(lab_config):
    """A src-a mailbox of 240 messages (~1.5 MB) and a fresh ledger."""
    cfg = lab_config
    rng = random.Random(5)
    with fresh_database(cfg) as dsn:
        db = psycopg2.connect(dsn)
        mb = add_mailbox(db, cfg, "src-a", unique_login("f"), "imap")
        msgs = [OutgoingMessage((b"\\Seen",) if i % 2 else (), dt.datetime(2021, 3, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i),
                                f"Subject: fault {i}\r\n\r\n".encode() + rng.randbytes(3000).hex().encode() + b"\r\n")
                for i in range(240)]
        with imap(cfg, "src-a", mb.source_login) as c:
            for start in range(0, len(msgs), 60):
                assert multiappend(c, "INBOX", msgs[start:start + 60]).ok
        yield db, mb
        db.close()


def _copy(db, cfg, mb, source_uri=None, dest_uri=None, progress=None, **opts):
    ref = MailboxRef(mb.id, mb.address, mb.source_login, mb.dest_login, mb.protocol)
    options = CopyOptions(**{"batch_messages": 20, "intent_grace_seconds": 0.3, "max_attempts": 8,
                             "backoff_seconds": 0.2, **opts})
    return copy_mailbox(CopyStore(db), ref, parse_endpoint(source_uri or imap_uri(cfg, "src-a")),
                        parse_endpoint(dest_uri or imap_uri(cfg, "dest")), options, progress)


def _exactly_once(cfg, mb):
    src = snapshot(cfg, "src-a", mb.source_login)
    dst = snapshot(cfg, "dest", mb.dest_login)
    assert dst["INBOX"] == src["INBOX"], (f"missing {src['INBOX'] - dst['INBOX']}, "
                                          f"extra {dst['INBOX'] - src['INBOX']}")


def test_connections_cut_mid_append(lab_config, mailbox):
    db, mb = mailbox
    with FaultProxy(lab_config.dest.imap_port) as proxy:
        # the next 6 destination connections are cut after 100 kB up. Per attempt the copier
        # opens its own session (small commands, never cut) and two append lanes (~1.5 MB
        # between them: cut mid-APPEND)
        proxy.cut_after(upstream_bytes=100_000, times=6)
        summary = _copy(db, lab_config, mb, dest_uri=_via(imap_uri(lab_config, "dest"), proxy.port))
    assert proxy.cuts >= 3 and summary.attempts >= 2
    _exactly_once(lab_config, mb)
    # a cut batch stops the later batches of its folder from committing: order survives too
    assert ordered_digests(lab_config, "dest", mb.dest_login, "INBOX") == \
        ordered_digests(lab_config, "src-a", mb.source_login, "INBOX")


def test_connections_cut_mid_fetch(lab_config, mailbox):
    db, mb = mailbox
    with FaultProxy(lab_config.servers["src-a"].imap_port) as proxy:
        # the identity probe's connection (once per server and process) comes before the cuts
        close_session(open_session(parse_endpoint(_via(imap_uri(lab_config, "src-a"), proxy.port)), mb.source_login))
        proxy.cut_after(downstream_bytes=200_000, times=2)
        summary = _copy(db, lab_config, mb, source_uri=_via(imap_uri(lab_config, "src-a"), proxy.port))
    assert proxy.cuts == 2 and summary.attempts == 3
    _exactly_once(lab_config, mb)


class RestartAfterFirstBatch:
    """Progress callback: after the first batch landed, stop the server and start it again
    0.5 s later, so the restart always falls in the middle of the copy."""

    def __init__(self, cfg: LabConfig, name: str):
        self.svc = dict((n, s) for n, _, s in services(cfg.root, cfg.raw))[name]
        self.thread = None

    def __call__(self, summary):
        if self.thread is None:
            self.svc.stop()
            self.thread = threading.Thread(target=lambda: (time.sleep(0.5), self.svc.start()))
            self.thread.start()

    def join(self):
        if self.thread is not None:
            self.thread.join()


@pytest.mark.parametrize("server", ["dest", "src-a"])
def test_server_restarted_mid_copy(lab_config, mailbox, server):
    db, mb = mailbox
    restart = RestartAfterFirstBatch(lab_config, server)
    try:
        summary = _copy(db, lab_config, mb, progress=restart)
    finally:
        restart.join()
    assert restart.thread is not None and summary.attempts >= 2, "the restart should have interrupted the copy"
    assert summary.copied == 240
    _exactly_once(lab_config, mb)


def test_slow_server_times_out_and_retries(lab_config, mailbox):
    db, mb = mailbox
    with FaultProxy(lab_config.dest.imap_port) as proxy:
        proxy.delay = 0.4  # each chunk 0.4 s late; the client times out after 0.3 s
        uri = _via(imap_uri(lab_config, "dest"), proxy.port) + "&timeout=0.3"
        slow = threading.Timer(2.0, lambda: setattr(proxy, "delay", 0.0))
        slow.start()
        summary = _copy(db, lab_config, mb, dest_uri=uri, backoff_seconds=0.5)
        slow.cancel()
    assert summary.attempts >= 2
    _exactly_once(lab_config, mb)




def test_a_failed_stored_copy_check_never_records_copied(lab_config, mailbox, monkeypatch):
    """The read-back runs on the lanes' checker session, after the append. When it fails (here:
    the third batch's check raises), nothing of the unchecked batches becomes `copied` in that
    attempt: they stay intents, the retry finds them at the destination by the digest of the
    appended bytes (`recovered`), and the mailbox ends exactly once."""
    from mailshift.copy import lanes
    from mailshift.errors import TransientError
    from support.mail import ledger_states

    db, mb = mailbox
    real, calls = lanes.check_stored, [0]

    def flaky(client, job, groups):
        calls[0] += 1
        if calls[0] == 3:
            raise TransientError("stored-copy check cut (test)")
        return real(client, job, groups)

    monkeypatch.setattr(lanes, "check_stored", flaky)
    summary = _copy(db, lab_config, mb)
    assert summary.attempts == 2 and summary.altered == 0
    assert summary.recovered >= 20                   # at least the batch whose check failed: never 'copied' unchecked
    assert summary.copied + summary.recovered == 240
    assert summary.stored_checked == summary.copied  # everything the pass recorded as copied was read back
    assert ledger_states(db, mb.id) == {1: 240}
    dest = snapshot(lab_config, "dest", mb.dest_login)["INBOX"]
    assert sum(dest.values()) == 240 and max(dest.values()) == 1
