"""Notices without servers: the SMTP relay's errors, the notice policy's gaps per household, and
the notice condition's signature the gate relies on."""

from __future__ import annotations

import datetime as dt
import inspect
import smtplib
import socket
from email.message import EmailMessage

import pytest

from mailshift.customers import audit, notices
from mailshift.errors import ConfigError, TransientError
from mailshift.protocols import smtp
from mailshift.store.notices import NoticeRow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _msg() -> EmailMessage:
    m = EmailMessage()
    m["Subject"] = "x"
    m.set_content("x\n")
    return m


def test_refused_connection_is_transient_and_names_the_relay():
    port = _free_port()
    with smtp.SmtpRelay("127.0.0.1", port, timeout=2) as relay:
        with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
            relay.send(_msg(), sender="a@x.example", recipient="b@x.example")


class FakeSmtp:
    def __init__(self, host, port, timeout):
        self.sent, self.quit_called, self.fail = [], False, None

    def send_message(self, msg, from_addr, to_addrs):
        if self.fail:
            raise self.fail
        self.sent.append((from_addr, to_addrs))

    def quit(self):
        self.quit_called = True


def test_one_refusal_is_returned_and_the_connection_reused():
    made = []

    def factory(*a, **kw):
        made.append(FakeSmtp(*a, **kw))
        return made[-1]

    relay = smtp.SmtpRelay("relay.example", 25, smtp_factory=factory)
    assert relay.send(_msg(), sender="a@x", recipient="ok@x") is None
    made[0].fail = smtplib.SMTPRecipientsRefused({"bad@x": (550, b"5.1.1 no such user")})
    assert relay.send(_msg(), sender="a@x", recipient="bad@x") == "550 5.1.1 no such user"
    made[0].fail = smtplib.SMTPDataError(554, b"5.7.1 rejected")
    assert relay.send(_msg(), sender="a@x", recipient="ok@x") == "554 5.7.1 rejected"
    made[0].fail = smtplib.SMTPServerDisconnected("gone")
    with pytest.raises(TransientError, match="relay.example:25 closed the connection"):
        relay.send(_msg(), sender="a@x", recipient="ok@x")
    relay.close()
    assert len(made) == 1 and made[0].sent == [("a@x", ["ok@x"])]


def test_relay_target_from_argument_or_settings(monkeypatch):
    monkeypatch.delenv("MAILSHIFT_SMTP", raising=False)
    with pytest.raises(ConfigError, match="MAILSHIFT_SMTP"):
        smtp.relay_target()
    monkeypatch.setenv("MAILSHIFT_SMTP", "relay.isp.example:587")
    assert smtp.relay_target() == ("relay.isp.example", 587)
    assert smtp.relay_target("[::1]:2525") == ("::1", 2525)
    with pytest.raises(ConfigError):
        smtp.parse_target("relay-without-port")


def _household(**policy) -> notices.Household:
    return notices.Household("H1", "B1", "Maison", "x.example", "Sato", "", "",
                             notices.NoticePolicy(**policy), {1: "a@x.example", 2: "b@x.example"},
                             [(1, "a@x.example", "pop3_apop", "...")])


def _row(mid, kind, channel, status, sent_at=None, detail=None):
    return NoticeRow(mid, kind, channel, status, sent_at, detail)


def test_household_gaps_name_every_missing_notice():
    at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    hh = _household(email_rounds=2, lead_days=14)
    early = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    notes = [_row(1, "email_round_1", "email", "sent", early), _row(1, "email_round_2", "email", "sent", early),
             _row(2, "email_round_1", "email", "failed"),
             _row(None, "call", "call", "failed", early, {"last_outcome": "no_answer"})]
    assert notices.household_gaps(hh, notes, at=at) == [
        "email round(s) 1,2 of 2 not sent to b@x.example", "no letter recorded",
        "call: customer not reached (last outcome no_answer)"]
    notes += [_row(2, "email_round_1", "email", "delivered", early), _row(2, "email_round_2", "email", "sent", early),
              _row(None, "letter", "letter", "delivered", early), _row(None, "call", "call", "acknowledged", early)]
    notes = [n for n in notes if not (n.channel == "call" and n.status == "failed")
             and not (n.mailbox_id == 2 and n.status == "failed")]
    assert notices.household_gaps(hh, notes, at=at) == []
    # lead time: the first round must be at least lead_days before the swap
    assert notices.household_gaps(hh, notes, at=early + dt.timedelta(days=3)) == [
        "first email round went out 2026-01-01, less than 14 days before 2026-01-04"]


def test_policy_from_building_spec_overrides_defaults_only():
    p = notices.NoticePolicy.from_spec({"notice_policy": {"email_rounds": 2, "call": False, "bogus": 1,
                                                          "lead_days": None}})
    assert p == notices.NoticePolicy(email_rounds=2, letter=True, call=False, lead_days=14)


def test_notice_gate_check_is_the_gate_signature():
    params = list(inspect.signature(notices.notice_gate_check).parameters.values())
    assert [p.name for p in params[:2]] == ["conn", "domain"]
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in params[2:])


def test_leave_on_server_does_not_affect_the_customer():
    assert not audit.affects_customer("pop3_leave_on_server")
    assert audit.affects_customer("pop3_apop") and audit.affects_customer("address_quoted")
