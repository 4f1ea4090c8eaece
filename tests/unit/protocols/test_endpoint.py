"""Connection URIs: plaintext (`tls=none`) reaches a non-loopback host only when the operator
says so on that connection (`allow_plaintext=true`); otherwise one configuration error line
(exit 3) naming the connection and the host."""

from __future__ import annotations

import pytest

from mailshift.cli import errors, main
from mailshift.errors import ConfigError
from mailshift.protocols.endpoint import endpoint_from_env, endpoint_from_json, is_loopback, parse_endpoint


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                        ("localhost", True), ("LocalHost", True), ("10.0.0.1", False),
                                        ("mail.example.net", False), ("localhost.example.net", False)])
def test_loopback(host, loop):
    assert is_loopback(host) is loop


def test_plaintext_to_a_loopback_host_is_allowed():
    ep = parse_endpoint("imap://admin:pw@127.0.0.1:143?tls=none")
    assert (ep.tls, ep.allow_plaintext) == ("none", False)
    assert parse_endpoint("imap://admin:pw@[::1]:143?tls=none").host == "::1"


@pytest.mark.parametrize("query, named", [("tls=none", "tls"), ("tls=starttls&pop3_tls=none&pop3_port=110", "pop3_tls")])
def test_plaintext_to_a_remote_host_is_refused(query, named):
    with pytest.raises(ConfigError) as ei:
        parse_endpoint(f"imap://admin:s3cret@legacy.example.net:143?{query}", conn_id="mailshift_legacy")
    text = str(ei.value)
    assert text.startswith(f"connection mailshift_legacy: {named}=none to legacy.example.net, which is not "
                           "loopback: passwords and mail would cross the network in clear; use tls=starttls")
    assert text.endswith("or set allow_plaintext=true on this connection")
    assert "s3cret" not in text and "\n" not in text


def test_allow_plaintext_is_the_operators_explicit_choice():
    ep = parse_endpoint("imap://admin:pw@legacy.example.net:143?tls=none&allow_plaintext=true")
    assert (ep.tls, ep.allow_plaintext, ep.host) == ("none", True, "legacy.example.net")
    with pytest.raises(ConfigError, match="allow_plaintext='maybe': expected true or false"):
        parse_endpoint("imap://admin:pw@legacy.example.net:143?tls=none&allow_plaintext=maybe")
    # the JSON (Airflow) form takes the same option in its extra
    doc = {"host": "legacy.example.net", "port": 143, "login": "admin", "password": "pw",
           "extra": {"tls": "none", "allow_plaintext": True}}
    assert endpoint_from_json(doc).allow_plaintext is True
    with pytest.raises(ConfigError, match="^connection mailshift_x: tls=none to legacy.example.net"):
        endpoint_from_json({**doc, "extra": {"tls": "none"}}, "mailshift_x")


def test_env_connection_is_named_and_the_cli_exits_3(monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_CONN_MAILSHIFT_LEGACY", "imap://admin:s3cret@legacy.example.net:143?tls=none")
    with pytest.raises(ConfigError, match="^connection mailshift_legacy: tls=none to legacy.example.net"):
        endpoint_from_env("mailshift_legacy")
    assert main(["check", "legacy", "--mailbox", "u1"]) == errors.CONFIG == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "s3cret" not in err
    assert err.splitlines() == [err.strip()] and err.startswith(
        "mailshift: error: connection mailshift_legacy: tls=none to legacy.example.net, which is not loopback")
    monkeypatch.setenv("AIRFLOW_CONN_MAILSHIFT_LEGACY",
                       "imap://admin:s3cret@legacy.example.net:143?tls=none&allow_plaintext=true")
    assert endpoint_from_env("mailshift_legacy").conn_id == "mailshift_legacy"
