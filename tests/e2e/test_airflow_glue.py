"""The Airflow glue against real Airflow (`dag.test()` on the lab's metadata DB) and real servers:

- issue #13 point 1: a legacy Cyrus server without a master user is copied with the mailbox's
  own password from Airflow's secrets backend (an `AIRFLOW_VAR_…` Variable through Airflow's
  environment backend), never logged or put in an XCom; the 0600 file of the source system is
  the fallback; without either the task fails at once;
- deliberate failures are not retried (a server without STARTTLS: configuration), transient
  ones are (a refused connection), with one Slack alert whose next step fits the cause.

Each test defines its own small DAG (`mailshift_test_…`) from the real building-DAG task; the
session fixture of conftest.py deletes those DAGs afterwards."""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid
from datetime import timedelta

import psycopg2
import pytest

from lab import slack_standin
from lab.connections import airflow_conn_env
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from support import realservers as rs
from support.mail import fresh_database

pytestmark = pytest.mark.integration
WHEN = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)


def _var(conn_id: str, login: str) -> str:
    """The environment form of the Variable `<conn id>__password__<login>` (README)."""
    return f"AIRFLOW_VAR_{conn_id}__password__{login}".upper()


@pytest.fixture
def cyrus_mailbox(lab_config, monkeypatch, tmp_path):
    """A cyrus-legacy mailbox (own password only) with 3 messages, into the lab's Dovecot dest;
    the task's connections and database as AIRFLOW_CONN_* of this test, no credentials dir."""
    import os

    from lab.airflow_home import airflow_env
    from mailshift.protocols.imap.session import forget_probes

    cfg = lab_config
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") != airflow_env(cfg)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        pytest.fail("Airflow is not configured for the lab: source .lab/airflow.env (make test does)")
    monkeypatch.setenv("MAILSHIFT_IDENTITY_PROBE_CACHE", str(tmp_path / "probes"))
    monkeypatch.delenv("MAILSHIFT_CREDENTIALS_DIR", raising=False)
    forget_probes()
    with fresh_database(cfg) as dsn:
        conn = psycopg2.connect(dsn)
        mb = rs.add_mailbox(conn, cfg, "cyrus-legacy", dest="dest")
        conn.close()
        with rs.imap(cfg, mb.source, mb.source_login, mb.source_password) as c:
            raws = [f"From: a@example.net\r\nSubject: m{i}\r\nMessage-ID: <m{i}.{mb.source_login}@x>\r\n\r\nbody {i}\r\n"
                    .encode() for i in range(3)]
            assert multiappend(c, "INBOX", [OutgoingMessage((b"\\Seen",), WHEN, r) for r in raws]).ok
        for key, value in airflow_conn_env(cfg).items():
            monkeypatch.setenv(key, value)
        db = psycopg2.extensions.parse_dsn(dsn)
        monkeypatch.setenv("AIRFLOW_CONN_MAILSHIFT_DB", json.dumps(
            {"conn_type": "postgres", "host": db["host"], "port": int(db["port"]), "login": db["user"],
             "password": db["password"], "schema": db["dbname"]}))
        monkeypatch.setenv("AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY", rs.uri(cfg, "cyrus-legacy", "user"))
        yield mb, dsn
    forget_probes()


def _copy_dag(mb, **task_args):
    """A one-task DAG: the building DAG's real `copy` task over this one mailbox."""
    from airflow.sdk import DAG
    from e2e.conftest import TEST_DAG_PREFIX, register_test_dag

    from mailshift.airflow.building import DEFAULT_ARGS, copy_batch

    args = {**DEFAULT_ARGS, "retry_delay": timedelta(0), "retry_exponential_backoff": False, **task_args}
    with DAG(dag_id=f"{TEST_DAG_PREFIX}glue_{uuid.uuid4().hex[:8]}", schedule=None, default_args=args) as dag:
        copy_batch({"label": mb.address, "mailbox_ids": [mb.id]})
    register_test_dag(dag)
    return dag


def _run(dag, kind="prestage"):
    dr = dag.test(run_conf={"pass_kind": kind})
    (ti,) = dr.get_task_instances()
    return dr, ti


def _posts(cfg, dag_id):
    return [c["params"] for c in slack_standin.recorded(cfg, "chat.postMessage") if dag_id in str(c["params"])]


def _xcoms(dr) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(XComModel.value).where(XComModel.dag_id == dr.dag_id,
                                                             XComModel.run_id == dr.run_id)).all()
    return json.dumps(rows, default=str)


def test_password_from_airflow_secrets_backend_copies_a_server_without_master_user(
        lab_config, cyrus_mailbox, monkeypatch, tmp_path, capfd):
    cfg = lab_config
    mb, _dsn = cyrus_mailbox
    monkeypatch.setenv(_var("mailshift_cyrus_legacy", mb.source_login), mb.source_password)

    dag = _copy_dag(mb)
    dr, ti = _run(dag)
    out = capfd.readouterr()
    logs = out.out + out.err
    assert (dr.state, ti.state, ti.try_number) == ("success", "success", 1), logs[-3000:]
    src = rs.snapshot(cfg, mb.source, mb.source_login, mb.source_password)
    dst = rs.snapshot(cfg, "dest", mb.dest_login, None)
    assert sum(src["INBOX"].values()) == 3 and dst["INBOX"] == src["INBOX"]
    # the task ran and logged (its per-mailbox line), the password is in none of it
    assert f"{mb.address}: prestage copied 3" in logs
    assert mb.source_password not in logs
    xcoms = _xcoms(dr)
    assert '"copied": 3' in xcoms and mb.source_password not in xcoms
    assert mb.source_password not in str(slack_standin.recorded(cfg))

    # no Variable: the source system's 0600 file (MAILSHIFT_CREDENTIALS_DIR/<conn id>.credentials)
    monkeypatch.delenv(_var("mailshift_cyrus_legacy", mb.source_login))
    rs.write_credentials(tmp_path / "mailshift_cyrus_legacy.credentials", {mb.source_login: mb.source_password})
    monkeypatch.setenv("MAILSHIFT_CREDENTIALS_DIR", str(tmp_path))
    dr, ti = _run(dag, "delta")
    assert (dr.state, ti.try_number) == ("success", 1)
    assert '"copied": 0' in _xcoms(dr)

    # neither: that mailbox fails at once (no retry of a missing password), one alert saying where it goes
    monkeypatch.delenv("MAILSHIFT_CREDENTIALS_DIR")
    slack_standin.reset(cfg)
    dr, ti = _run(dag, "delta")
    assert (dr.state, ti.state, ti.try_number) == ("failed", "failed", 1)
    (alert,) = _posts(cfg, dag.dag_id)
    assert f"auth=user needs the password of {mb.source_login}" in alert["text"] and "not retried" in alert["text"]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_deliberate_failures_fail_at_once_transient_ones_are_retried(lab_config, cyrus_mailbox, monkeypatch):
    cfg = lab_config
    mb, _dsn = cyrus_mailbox
    monkeypatch.setenv(_var("mailshift_cyrus_legacy", mb.source_login), mb.source_password)
    slack_standin.reset(cfg)

    # Cyrus offers no STARTTLS: a configuration error, the same on every try
    monkeypatch.setenv("AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY", rs.uri(cfg, "cyrus-legacy", "user", tls="starttls"))
    dag = _copy_dag(mb, retries=2)
    dr, ti = _run(dag)
    assert (dr.state, ti.state, ti.try_number) == ("failed", "failed", 1)
    (alert,) = _posts(cfg, dag.dag_id)
    assert "STARTTLS" in alert["text"] and "(not retried)" in alert["text"]
    assert "A setting is wrong" in str(alert["blocks"])
    assert mb.source_password not in str(alert)

    # nothing listens: transient, retried (2 retries -> 3 tries), then one alert
    monkeypatch.setenv("AIRFLOW_CONN_MAILSHIFT_CYRUS_LEGACY",
                       rs.uri(cfg, "cyrus-legacy", "user").replace(f":{cfg.cyrus['cyrus-legacy']['imap_port']}?",
                                                                   f":{_closed_port()}?"))
    dag = _copy_dag(mb, retries=2)
    dr, ti = _run(dag)
    assert (dr.state, ti.state, ti.try_number) == ("failed", "failed", 3)
    (alert,) = _posts(cfg, dag.dag_id)
    assert "connection refused" in alert["text"].lower() and "did not answer after every retry" in str(alert["blocks"])
