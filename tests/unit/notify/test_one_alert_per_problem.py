"""A failed proof pages exactly once (issue #16): the proof alert posted by `mark_proven` and the
failure callback of that same task share a problem key claimed in the mailshift database. The
message names the mailbox, links the Airflow run and the building page, and says what to do."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import psycopg2
import pytest

from mailshift.airflow import callbacks
from mailshift.notify import slack
from mailshift.store import alerts as alert_store
from support.mail import add_mailbox, fresh_database, unique_login

BASE = "https://airflow.example.net"
PAGES = "https://migration.example.net"     # MAILSHIFT_UI_BASE_URL: where the pages are linked from


@pytest.fixture
def env(lab_config, monkeypatch):
    from lab import slack_standin

    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        mb = add_mailbox(conn, lab_config, "src-a", unique_login("al"))
        channel = f"#t-{uuid.uuid4().hex[:10]}"
        client = slack.web_client(lab_config.slack_token, lab_config.slack_base_url)
        monkeypatch.setattr(callbacks, "database_url", lambda: dsn)
        monkeypatch.setattr(callbacks, "ui_base_url", lambda: BASE)
        monkeypatch.setenv("MAILSHIFT_UI_BASE_URL", PAGES)
        monkeypatch.setattr(callbacks, "_client", lambda: client)
        monkeypatch.setattr(callbacks, "CHANNEL", channel)

        def read():
            return [c["params"] for c in slack_standin.recorded(lab_config, "chat.postMessage")
                    if c["params"].get("channel") == channel]
        yield SimpleNamespace(conn=conn, mailbox=mb, building=f"B-src-a-{mb.source_login}", read=read,
                              channel=channel)
        conn.close()


def _ti(building: str, task_id: str = "mark_proven", map_index: int = -1):
    dag = f"mailshift_building_{building}"
    return SimpleNamespace(dag_id=dag, run_id="manual__2026-05-01T10:00:00", task_id=task_id, map_index=map_index,
                           try_number=1, log_url=f"{BASE}/dags/{dag}/runs/manual__2026-05-01T10:00:00/tasks/{task_id}")


def test_failed_proof_pages_once(env):
    ti = _ti(env.building)
    verdict = {"proven": False, "failed_expectations": ["expect_column_values_to_be_between"]}
    msg = callbacks.proof_failed_alert(env.building, verdict, dag_id=ti.dag_id, run_id=ti.run_id)
    assert callbacks.post(msg, env.channel) is True
    # mark_proven then raises; Airflow runs the task's failure callback for the same problem
    callbacks.task_failure_alert({"ti": ti, "exception": RuntimeError(f"building {env.building} is NOT proven")})
    (sent,) = env.read()
    assert alert_store.seen(env.conn, msg.dedup_key) == 2
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in sent["blocks"][1]["fields"]}
    assert fields["*Mailbox*"] == env.mailbox.address
    assert fields["*Building*"] == env.building and fields["*Domain*"] == "lab.mailshift.test"
    assert "no copy pass has run for this mailbox" in sent["blocks"][2]["text"]["text"]
    assert sent["blocks"][3]["text"]["text"].startswith("*Next step*\n")
    urls = [e["url"] for e in sent["blocks"][-1]["elements"]]
    assert urls == [f"{BASE}/dags/{ti.dag_id}/runs/manual__2026-05-01T10%3A00%3A00",
                    f"{PAGES}/mailshift/building/{env.building}"]


def test_mark_proven_posts_the_proof_alert_itself_and_pages_once(env, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from mailshift.airflow import building

    ti = _ti(env.building)
    monkeypatch.setattr(building, "get_current_context", lambda: {"ti": ti})
    verdict = {"proven": False, "not_proven": 1, "failed_expectations": ["expect_table_row_count_to_equal"],
               "report": "/worker/reports/x.html"}
    with pytest.raises(AirflowFailException) as failed:
        building.mark_proven.function(env.building, verdict)
    callbacks.task_failure_alert({"ti": ti, "exception": failed.value})
    (sent,) = env.read()
    assert "not every mailbox of the building was verified" in sent["text"]
    assert env.mailbox.address in str(sent["blocks"]) and "/worker/reports" not in str(sent)
    assert "Next step" in str(sent["blocks"])


def test_deliberate_failures_get_their_own_next_step(env):
    from mailshift.airflow.failfast import fail_fast
    from mailshift.errors import CredentialsError

    ti = _ti(env.building, "copy", 0)
    with pytest.raises(Exception) as failed:
        with fail_fast():
            raise CredentialsError("127.0.0.1:14361: no password for c1 in /etc/x.credentials")
    callbacks.task_failure_alert({"ti": ti, "exception": failed.value})
    (sent,) = env.read()
    assert "no password for c1" in sent["text"] and "(not retried)" in sent["text"]
    assert "__password__" in sent["blocks"][3]["text"]["text"]     # where the password goes


def test_other_task_failures_page_with_links(env):
    ti = _ti(env.building, "copy", 0)
    from mailshift.errors import TransientError

    callbacks.task_failure_alert({"ti": ti, "exception": TransientError("IMAP 10.0.0.1:143 <x>: timed out"),
                                  "batch_label": env.mailbox.address})
    callbacks.task_failure_alert({"ti": ti, "exception": TransientError("again")})   # same problem
    (sent,) = env.read()
    assert "&lt;x&gt;" in sent["text"]
    assert [e["url"] for e in sent["blocks"][-1]["elements"]][0] == ti.log_url
    assert "clear the task in Airflow" in sent["blocks"][3]["text"]["text"]
