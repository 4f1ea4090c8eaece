"""Point 8 of issue #13: every operator-facing failure of `mailshift copy` / `mailshift verify` is
ONE line naming the server (or database) and what to do, with the documented exit code — never
a traceback. Real servers only: Cyrus without TLS (no STARTTLS), Dovecot's IMAPS with an
unknown CA, a closed port, a socket that never answers, a wrong password, an authzid the
server does not check, a database that is down."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from lab.connections import airflow_conn_env
from support import realservers as rs
from support.mail import fresh_database

pytestmark = pytest.mark.integration
MAILSHIFT = str(Path(sys.executable).with_name("mailshift"))


@pytest.fixture
def setup(lab_config, tmp_path):
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        mb = rs.add_mailbox(conn, lab_config, "cyrus-legacy")
        src_cred = rs.write_credentials(tmp_path / "src.credentials", {mb.source_login: mb.source_password})
        dst_cred = rs.write_credentials(tmp_path / "dest.credentials", {mb.dest_login: mb.dest_password})
        env = {**os.environ, **airflow_conn_env(lab_config), "MAILSHIFT_DB_URL": dsn,
               "AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY": rs.uri(lab_config, "cyrus-legacy", "user", src_cred),
               "AIRFLOW_CONN_MAILSHIFT_DEST": rs.uri(lab_config, "cyrus-dest", "user", dst_cred)}
        yield lab_config, mb, env, src_cred
        conn.close()


def run(args, env):
    r = subprocess.run([MAILSHIFT, *args], env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    # retry warnings may come first (a transient failure is retried); the command ENDS with one line
    assert all(" WARNING " in line for line in lines[:-1]), r.stderr
    return r.returncode, lines[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_listener():
    """A port that accepts TCP connections and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_no_starttls(setup):
    cfg, mb, env, cred = setup
    env["AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY"] = rs.uri(cfg, "cyrus-legacy", "user", cred, tls="starttls")
    port = cfg.cyrus["cyrus-legacy"]["imap_port"]
    code, line = run(["copy", mb.address], env)
    assert code == 3
    assert line == (f"mailshift: error: IMAP 127.0.0.1:{port} as {mb.source_login}: the server does not offer "
                    "STARTTLS; refusing to send a password in clear: enable TLS on it or set the connection's "
                    "tls=imaps")


def test_tls_handshake_failure(setup):
    cfg, mb, env, cred = setup
    env["AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY"] = rs.uri(cfg, "cyrus-legacy", "user", cred, tls="imaps")
    port = cfg.cyrus["cyrus-legacy"]["imap_port"]
    code, line = run(["copy", mb.address], env)
    assert code == 3
    assert re.fullmatch(rf"mailshift: error: IMAP 127\.0\.0\.1:{port} as {mb.source_login}: TLS handshake failed "
                        r"\(.+\): check the connection's `tls` option \(starttls/imaps\) against the port", line), line


def test_tls_certificate_rejected(setup):
    """Dovecot's IMAPS with the lab's own CA, which the client is not told about."""
    cfg, mb, env, cred = setup
    d = cfg.dest
    env["AIRFLOW_CONN_MAILSHIFT_DEST"] = (f"imap://{d.admin_user}:{d.admin_password}@127.0.0.1:{d.imaps_port}"
                                          "?tls=imaps&auth=master")
    code, line = run(["copy", mb.address], env)
    assert code == 3
    assert re.fullmatch(rf"mailshift: error: IMAP 127\.0\.0\.1:{d.imaps_port} as {mb.dest_login}: TLS certificate "
                        r"rejected \((self-signed certificate in certificate chain|unable to get local issuer "
                        r"certificate)\): fix the server's certificate or the connection's `ca` option", line), line


def test_connection_refused(setup):
    cfg, mb, env, cred = setup
    port = free_port()
    env["AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY"] = f"imap://127.0.0.1:{port}?tls=none&auth=user&credentials={cred}"
    code, line = run(["copy", mb.address], env)
    assert code == 5
    assert line == (f"mailshift: error: IMAP 127.0.0.1:{port} as {mb.source_login}: connection refused; check that "
                    "it is up and reachable, then run the command again (safe to retry)")


def test_connection_timeout(setup):
    cfg, mb, env, cred = setup
    with silent_listener() as port:
        env["AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY"] = (f"imap://127.0.0.1:{port}?tls=none&auth=user&timeout=0.5"
                                                      f"&credentials={cred}")
        code, line = run(["copy", mb.address], env)
    assert code == 5
    assert line == (f"mailshift: error: IMAP 127.0.0.1:{port} as {mb.source_login}: no answer (timed out); check "
                    "that it is up and reachable, then run the command again (safe to retry)")


def test_authentication_refused(setup):
    cfg, mb, env, cred = setup
    rs.write_credentials(cred, {mb.source_login: "not-the-password"})
    port = cfg.cyrus["cyrus-legacy"]["imap_port"]
    code, line = run(["copy", mb.address], env)
    assert code == 4
    assert re.fullmatch(rf"mailshift: error: IMAP 127\.0\.0\.1:{port} as {mb.source_login}: login refused: .+; "
                        r"not retried: fix the credentials of that connection", line), line
    assert "not-the-password" not in line


def test_identity_mismatch(setup):
    cfg, mb, env, cred = setup
    env["AIRFLOW_CONN_MAILSHIFT_DEST"] = rs.uri(cfg, "cyrus-dest", "authzid")
    port = cfg.cyrus["cyrus-dest"]["imap_port"]
    code, line = run(["copy", mb.address], env)
    assert code == 7
    assert re.fullmatch(rf"mailshift: error: IMAP 127\.0\.0\.1:{port}: the server accepted a SASL PLAIN with "
                        r"authorization identity for the non-existent mailbox 'mailshift-identity-probe-[0-9a-f]{12}': "
                        r"it ignores or does not check the identity asked for, so no session proves its mailbox; "
                        r"nothing was read: use auth=user with per-mailbox credentials, or fix the server's authzid "
                        r"setup; not retried: a person must check that server's login setup or the inventory", line)
    code, line = run(["verify", mb.address], env)
    assert code == 7 and "mailshift-identity-probe-" in line


def test_database_down(setup):
    cfg, mb, env, cred = setup
    port = free_port()
    env["MAILSHIFT_DB_URL"] = f"postgresql://mailshift:secret-pw@127.0.0.1:{port}/mailshift"
    code, line = run(["copy", mb.address], env)
    assert code == 5
    assert line.startswith(f"mailshift: error: database 127.0.0.1:{port}/mailshift unreachable: ")
    assert line.endswith("check that it is up and reachable, then run the command again (safe to retry)")
    assert "secret-pw" not in line
