"""Slack alerts from Airflow: one message per problem, with links to the run and the mailshift page.

Sent through the Slack provider's hook (connection `mailshift_slack`; its extra `base_url`
points the real slack-sdk client at the lab's stand-in), so tokens stay in the connection.
Links are built from Airflow's own `[api] base_url` (AIRFLOW__API__BASE_URL) and, for the
mailshift pages, MAILSHIFT_UI_BASE_URL when set (`settings.ui_base_url`, as the DAG docs), never
from a path on a worker.

One alert per problem: every message posted from inside a task, and the failure callback of
that task, carry the same key (`notify.alerts.problem_key`: DAG, run, task, map index); the key
is claimed in the mailshift database (`store.alerts.claim`) before posting, so a failed proof
(posted by `mark_proven` with `proof_failed_alert`) does not page again when `mark_proven` then
fails. Run-level messages (a wave started / finished) carry their own key (`alerts.run_key`). A proof failure
is rebuilt here from the database (the mailboxes, their reasons, the first folder), since XCom
carries no addresses.
"""

from __future__ import annotations

import logging

from mailshift.airflow.connections import SLACK_CONN_ID, database_url
from mailshift.notify import alerts, slack

log = logging.getLogger(__name__)
CHANNEL = "#mailshift-ops"
BUILDING_DAG_PREFIX = "mailshift_building_"


def ui_base_url() -> str | None:
    """Airflow's public base URL ([api] base_url), the root of every link we send."""
    try:
        from airflow.configuration import conf

        return conf.get("api", "base_url", fallback=None) or None
    except Exception:  # noqa: BLE001 - no link rather than no alert
        return None


def pages_base_url() -> str | None:
    """The base URL links to the mailshift pages start from: MAILSHIFT_UI_BASE_URL (as the DAG
    docs' links, `settings.ui_base_url`), else Airflow's `[api] base_url`."""
    from mailshift import settings

    return settings.ui_base_url() or ui_base_url()


def page_url(building_id: str) -> str | None:
    """The building's mailshift page (http(s), never a path on a worker)."""
    return alerts.building_page_url(pages_base_url(), building_id)


def page_links(ti, path: str = "") -> tuple[str | None, str | None]:
    """(the task's DAG run in Airflow, the mailshift page at `path`) as http links."""
    return alerts.dag_run_url(ui_base_url(), ti.dag_id, ti.run_id), alerts.page_url(pages_base_url(), path)


def _client():
    from airflow.providers.slack.hooks.slack import SlackHook

    return SlackHook(slack_conn_id=SLACK_CONN_ID).client


def _claim(key: str, kind: str, summary: str) -> bool:
    """True when this problem has not paged yet. A database that cannot answer does not
    silence an alert (better twice than never)."""
    from mailshift.store import alerts as store
    from mailshift.store import db

    try:
        conn = db.connect(database_url())
    except Exception:  # noqa: BLE001
        log.warning("alert dedup unavailable; posting %s", key)
        return True
    try:
        return store.claim(conn, key, kind, summary)
    except Exception:  # noqa: BLE001
        log.exception("alert dedup failed; posting %s", key)
        return True
    finally:
        conn.close()


def _release(key: str) -> None:
    from mailshift.store import alerts as store
    from mailshift.store import db

    try:
        conn = db.connect(database_url())
        try:
            store.release(conn, key)
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - the key stays claimed: one alert lost beats a crash here
        log.exception("could not release alert key %s", key)


def _current_key() -> str | None:
    """The problem key of the task running now (None outside a task)."""
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except Exception:  # noqa: BLE001
        return None
    return alerts.problem_key(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))


def post(message: slack.Message, channel: str | None = None, client=None, *,
         silence_task_failure: bool = False) -> bool:
    """Post once per problem (the message's key, else the running task's); returns True when
    sent. `silence_task_failure`: this message already tells about the running task's failure
    (e.g. a wave summary that then fails the task), so its failure callback must not page again.
    An unreachable Slack is logged, never fails a migration task."""
    task_key = _current_key()
    key = message.dedup_key or task_key
    if silence_task_failure and task_key and task_key != key:
        _claim(task_key, "silenced", f"told by {key}")
    if key is not None and not _claim(key, message.kind or "message", message.text):
        log.info("alert %s already posted; not paging again", key)
        return False
    try:
        slack.post(client or _client(), message, channel or CHANNEL)
        return True
    except Exception:  # noqa: BLE001
        log.exception("could not post to Slack: %s", slack.scrub(message.text)[:200])
        if key is not None:
            _release(key)   # the next caller (a retry, the failure callback) tries again
        return False


def building_of(dag_id: str) -> str | None:
    return dag_id[len(BUILDING_DAG_PREFIX):] if dag_id.startswith(BUILDING_DAG_PREFIX) else None


def proof_failed_alert(building_id: str, verdict: dict | None, *, dag_id: str | None = None,
                       run_id: str | None = None, task_id: str = "mark_proven", map_index: int = -1) -> slack.Message:
    """The full proof-failure alert of a building: mailboxes and reasons from the database,
    links to the run and the building page, the next step; keyed like the failing task."""
    from mailshift.progress.alerts import proof_facts
    from mailshift.store import db

    base = ui_base_url()
    facts = None
    try:
        conn = db.connect(database_url())
        try:
            facts = proof_facts(conn, building_id)
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - an alert without mailboxes beats no alert
        log.exception("facts of the failed proof of %s unavailable", building_id)
    key = alerts.problem_key(dag_id, run_id, task_id, map_index) if dag_id and run_id else None
    return alerts.proof_failed(building_id, facts=facts, failed_checks=(verdict or {}).get("failed_expectations") or (),
                               run_url=alerts.dag_run_url(base, dag_id, run_id) if dag_id and run_id else None,
                               page_url=page_url(building_id), dedup_key=key).message()


def _error_class(error) -> str | None:
    """The mailshift exception behind a failure (`failfast.NotRetried` carries its name)."""
    if error is None:
        return None
    return getattr(error, "cause_class", None) or type(error).__name__


def task_failed_message(context) -> slack.Message:
    """The alert of a task that failed after its retries, from the callback's context."""
    ti = context["ti"]
    error = context.get("exception")
    map_index = getattr(ti, "map_index", -1)
    label = context.get("batch_label") or (str(map_index) if map_index is not None and map_index >= 0 else None)
    base = ui_base_url()
    building = building_of(ti.dag_id)
    try:
        log_url = ti.log_url
    except Exception:  # noqa: BLE001
        log_url = None
    where = {"Building": building, "Mailbox": context.get("batch_label")}
    return alerts.task_failed(
        ti.dag_id, ti.task_id, ti.try_number, f"{type(error).__name__}: {error}" if error else "failed",
        label=label, run_url=alerts.dag_run_url(base, ti.dag_id, ti.run_id), log_url=log_url,
        page_url=page_url(building) if building else None, where=where,
        error_class=_error_class(error),
        dedup_key=alerts.problem_key(ti.dag_id, ti.run_id, ti.task_id, map_index)).message()


def task_failure_alert(context) -> None:
    """on_failure_callback: runs only once the task has no retries left; silent when the task
    already posted its own alert about this failure (same problem key)."""
    post(task_failed_message(context))
