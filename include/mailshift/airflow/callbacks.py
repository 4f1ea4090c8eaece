"""Slack alerts from Airflow: a task that failed after its retries, and any message we build.

Sent through the Slack provider's hook (connection `mailshift_slack`; its extra `base_url`
points the real slack-sdk client at the lab's stand-in), so tokens stay in the connection.
"""

from __future__ import annotations

import logging

from mailshift.airflow.connections import SLACK_CONN_ID
from mailshift.notify import slack

log = logging.getLogger(__name__)
CHANNEL = "#mailshift-ops"


def post(message: slack.Message, channel: str = CHANNEL) -> None:
    """Post; an unreachable Slack is logged, never allowed to fail a migration task."""
    from airflow.providers.slack.hooks.slack import SlackHook

    try:
        slack.post(SlackHook(slack_conn_id=SLACK_CONN_ID).client, message, channel)
    except Exception:
        log.exception("could not post to Slack: %s", slack.scrub(message.text)[:200])


def task_failure_alert(context) -> None:
    """on_failure_callback: runs only once the task has no retries left."""
    ti = context["ti"]
    error = context.get("exception")
    label = context.get("batch_label") or (str(ti.map_index) if getattr(ti, "map_index", -1) >= 0 else None)
    post(slack.task_failed(ti.dag_id, ti.task_id, ti.try_number,
                           f"{type(error).__name__}: {error}" if error else "failed", label))
