"""Slack messages for the project team: what happened, where, how much — never a secret or mail.

Messages are built here as plain dicts (text + blocks) so they can be tested without Slack, and
sent through slack-sdk's WebClient: in Airflow through the Slack provider's hook (connection
`mailshift_slack`, whose extra may set `base_url`), elsewhere from MAILSHIFT_SLACK_TOKEN and
MAILSHIFT_SLACK_BASE_URL. Every text passes `scrub()` as a last line of defence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_CHANNEL = "#mailshift-ops"

_SECRETS = [
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]+@"), r"\1:***@"),  # user:password@ in URLs
    (re.compile(r"xox[abpr]-[A-Za-z0-9-]+"), "xox*-***"),                          # Slack tokens
    (re.compile(r"(?i)(password|passwd|secret|token)(\s*[=:]\s*)\S+"), r"\1\2***"),
]


def scrub(text: str) -> str:
    """Remove anything that looks like a credential."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def escape(text) -> str:
    """Slack's three control characters as entities (&amp; &lt; &gt;), so text from servers,
    mailbox names and errors can never form a link, a mention or a broken block."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Message:
    """A Slack message. `dedup_key` names the problem: the Airflow glue posts a key once
    (`store.alerts.claim`), so two callbacks about the same problem page once."""

    text: str
    blocks: list | None = None
    dedup_key: str | None = None
    kind: str | None = None

    def payload(self, channel: str) -> dict:
        out = {"channel": channel, "text": scrub(self.text)}
        if self.blocks:
            out["blocks"] = [_scrub_block(b) for b in self.blocks]
        return out


def _scrub_block(block: dict) -> dict:
    out = dict(block)
    if isinstance(out.get("text"), dict):
        out["text"] = {**out["text"], "text": scrub(out["text"]["text"])}
    if out.get("fields"):
        out["fields"] = [{**f, "text": scrub(f["text"])} for f in out["fields"]]
    if out.get("elements"):
        out["elements"] = [_scrub_block(e) for e in out["elements"]]
    return out


def _section(md: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": md}}


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def task_failed(dag_id: str, task_id: str, try_number: int, error: str, label: str | None = None,
                url: str | None = None) -> Message:
    """A task that failed after its retries (see notify.alerts.task_failed for the full alert)."""
    from mailshift.notify import alerts

    return alerts.task_failed(dag_id, task_id, try_number, error, label=label, run_url=url).message()


def gx_failed(building: str, failed: list[str], report: str | None = None) -> Message:
    """A building whose proof failed (kept for callers that know only the expectations; the
    Airflow glue replaces it by notify.alerts.proof_failed with the mailboxes and links)."""
    from mailshift.notify import alerts

    return alerts.proof_failed(building, failed_checks=failed).message()


def wave_started(wave: int | str, buildings: int, mailboxes: int, bytes_: int, *, run_url: str | None = None,
                 dedup_key: str | None = None) -> Message:
    text = f":rocket: wave {escape(wave)} started: {buildings} buildings, {mailboxes} mailboxes, {_mb(bytes_)}"
    body = text + (f"\n<{run_url}|Open the wave run in Airflow>" if run_url else "")
    return Message(text, [_section(body)], dedup_key=dedup_key, kind="wave_started")


def wave_finished(wave: int | str, buildings: int, proven: int, mailboxes: int, not_proven: int,
                  messages: int, bytes_: int, seconds: float, *, run_url: str | None = None,
                  page_url: str | None = None, dedup_key: str | None = None) -> Message:
    """The end of a wave; when buildings are not proven it says where to look and what to do."""
    ok = not_proven == 0 and proven == buildings
    icon = ":white_check_mark:" if ok else ":warning:"
    text = (f"{icon} wave {escape(wave)} finished in {seconds / 60:.1f} min: {proven}/{buildings} buildings proven, "
            f"{mailboxes} mailboxes ({not_proven} not proven), {messages} messages, {_mb(bytes_)}")
    body = text
    if not ok:
        body += ("\n*Next step*\nOpen the buildings not proven (each one's own alert names the mailboxes and "
                 "what to do); once they are fixed or waived, clear the wave's `summary` task.")
    links = [f"<{u}|{label}>" for label, u in (("Open the wave run in Airflow", run_url),
                                                ("Open the wave in mailshift", page_url)) if u]
    if links:
        body += "\n" + " · ".join(links)
    return Message(text, [_section(body)], dedup_key=dedup_key, kind="wave_finished")


def gate_blocked(domain: str, reasons: list[str], more: int = 0) -> Message:
    shown = "\n".join(f"• {escape(r)}" for r in reasons[:20])
    if more or len(reasons) > 20:
        shown += f"\n… and {more + max(len(reasons) - 20, 0)} more"
    text = f":no_entry: MX swap for {escape(domain)} BLOCKED by the gate: {len(reasons) + more} reason(s)"
    return Message(text, [_section(f":no_entry: *Gate blocked* `{escape(domain)}`\n{shown}")])


def web_client(token: str | None = None, base_url: str | None = None):
    """A slack-sdk WebClient from arguments or MAILSHIFT_SLACK_TOKEN / MAILSHIFT_SLACK_BASE_URL."""
    from slack_sdk import WebClient

    from mailshift import settings
    from mailshift.errors import ConfigError

    token = token or settings.get(settings.SLACK_TOKEN)
    if not token:
        raise ConfigError(f"no Slack token: set {settings.SLACK_TOKEN} or use the Airflow connection mailshift_slack")
    base_url = base_url or settings.get(settings.SLACK_BASE_URL, "https://slack.com/api/")
    return WebClient(token=token, base_url=base_url)


def post(client, message: Message, channel: str = DEFAULT_CHANNEL) -> dict:
    """Send through a slack-sdk WebClient; returns Slack's response data."""
    return client.chat_postMessage(**message.payload(channel)).data
