"""A POP3-only source is read without leaving a trace (issue #13 point 9): mailshift reads a
message with TOP, never RETR, so the legacy server does not mark it read. Checked on the lab's
Dovecot, whose RETR sets \\Seen (visible over IMAP) even when the session never QUITs."""

from __future__ import annotations

import datetime as dt

import pytest

from lab.connections import imap_uri
from mailshift.protocols.endpoint import parse_endpoint
from mailshift.protocols.pop3 import open_pop3, pop3_entries, read_messages
from support.mail import imap, unique_login

pytestmark = pytest.mark.integration

RAW = (b"From: a@example.net\r\nTo: b@example.net\r\nSubject: unread\r\n\r\n"
       b".a line that starts with a dot\r\nlast line\r\n")


def _unread_mailbox(cfg) -> str:
    from lab import users

    login = unique_login("p3")
    users.ensure_users(cfg, "src-a", [(login, None, None)])
    users.reset_mailbox(cfg, "src-a", login)
    with imap(cfg, "src-a", login) as c:
        c.append("INBOX", RAW, flags=(), msg_time=dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
    return login


def _seen(cfg, login) -> list:
    with imap(cfg, "src-a", login) as c:
        c.select_folder("INBOX", readonly=True)
        return [b"\\Seen" in f[b"FLAGS"] for f in c.fetch(c.search("ALL"), ["FLAGS"]).values()]


def test_reading_a_pop3_source_leaves_every_message_unread(lab_config):
    login = _unread_mailbox(lab_config)
    ep = parse_endpoint(imap_uri(lab_config, "src-a"))
    with open_pop3(ep, login) as pop:
        got = [raw for _entry, raw in read_messages(pop, pop3_entries(pop))]
    assert got == [RAW]                       # byte for byte, dot-unstuffed, CRLF kept
    assert _seen(lab_config, login) == [False]


def test_the_same_server_does_mark_a_retr_read(lab_config):
    """The control: on this server RETR would have left a trace, so the test above can fail."""
    login = _unread_mailbox(lab_config)
    ep = parse_endpoint(imap_uri(lab_config, "src-a"))
    with open_pop3(ep, login) as pop:
        pop.retr(1)
    assert _seen(lab_config, login) == [True]
