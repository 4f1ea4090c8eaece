"""Operator alerts: one Slack message per problem that says where, what, and what to do.

An alert names the domain, building, mailbox and folder as far as they are known, states the
finding in plain words (never the name of a Great Expectations expectation), links the Airflow
run (or task log) and the mailshift page of the building (URLs under a configured base, never a
path on a worker), and gives the next step with the exact command when there is one. Every
piece of text from outside (server answers, folder names, exception messages) is escaped for
Slack (`slack.escape`). The message's `dedup_key` names the problem; the Airflow glue posts
each key once, so the failed proof and the failed task that reports it page once.

Pure functions: no Airflow, no database. Facts are passed in (`ProofFacts`); the glue collects
them (`mailshift.progress.alerts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from mailshift.notify.slack import Message, escape

#: plain words for the checks of verify.gx_suites (expectation type or its snake_case name)
CHECK_WORDS = {
    "expect_table_row_count_to_equal": "not every mailbox of the building was verified",
    "expect_column_values_to_be_unique": "a mailbox was verified twice in the same run",
    "expect_column_pair_values_to_be_equal": "the destination does not hold the same number of messages "
                                             "or bytes as the source",
    "expect_column_values_to_be_between": "messages are missing, extra, altered or refused at the destination",
    "mailboxes not proven": "mailboxes are not proven",
}
MAX_MAILBOXES = 5       # mailboxes named in one alert; the page lists the rest
MAX_TEXT = 2900         # Slack rejects a section text over 3000 characters


def check_words(check: str) -> str:
    """Plain words for a check name (GX expectation type in any spelling, or our own words)."""
    key = "".join("_" + c.lower() if c.isupper() else c for c in check).lstrip("_")
    return CHECK_WORDS.get(key, CHECK_WORDS.get(check, check.replace("_", " ")))


UI_MOUNT = "mailshift"   # the plugin's url_prefix (plugins/mailshift_ui.py PREFIX)


def page_url(ui_base: str | None, path: str = "") -> str | None:
    """A mailshift page (`building/B-1`, `wave/3`, "" for the overview) under the base URL of the
    Airflow that serves the plugin; None when no base is configured (never a path on a worker)."""
    if not ui_base:
        return None
    return f"{ui_base.rstrip('/')}/{UI_MOUNT}/{path}"


def building_page_url(ui_base: str | None, building_id: str) -> str | None:
    """The mailshift page of a building (see `page_url`)."""
    return page_url(ui_base, "building/" + quote(building_id, safe=""))


def dag_run_url(ui_base: str | None, dag_id: str, run_id: str) -> str | None:
    if not ui_base:
        return None
    return f"{ui_base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def problem_key(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """The key of 'this task of this run failed': the task's own message and its failure
    callback share it, so the problem pages once."""
    return f"task:{dag_id}:{run_id}:{task_id}:{-1 if map_index is None else map_index}"


def run_key(event: str, dag_id: str, run_id: str, *facts) -> str:
    """The key of a run-level event (a wave started, a wave finished with these figures): a
    retried or cleared task does not post it again unless the facts changed."""
    return ":".join([event, dag_id, run_id, *map(str, facts)])


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True)
class Alert:
    kind: str                   # proof_failed, task_failed, ...
    icon: str
    title: str                  # plain words, escaped when rendered
    finding: str                # plain words, escaped when rendered
    next_step: str              # plain words, escaped when rendered
    command: str | None = None  # the exact command to run, if any
    where: dict = field(default_factory=dict)    # label -> value (Domain, Building, Mailbox, Folder)
    links: list = field(default_factory=list)    # [(label, url)]
    dedup_key: str | None = None
    details: list = field(default_factory=list)  # extra lines (one per mailbox), escaped when rendered

    def text(self) -> str:
        """The notification text (shown by phones and screen readers): every part, escaped."""
        where = ", ".join(f"{k.lower()} {v}" for k, v in self.where.items() if v)
        parts = [f"{self.title}" + (f" ({where})" if where else ""), self.finding, f"Next step: {self.next_step}"]
        if self.command:
            parts.append(f"Command: {self.command}")
        return _cut(escape(" — ".join(parts)))

    def blocks(self) -> list[dict]:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{self.icon} *{escape(self.title)}*"}}]
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{escape(v)}"} for k, v in self.where.items() if v]
        if fields:
            blocks.append({"type": "section", "fields": fields[:10]})
        finding = "*What was found*\n" + escape(self.finding)
        if self.details:
            finding += "\n" + "\n".join(f"• {escape(d)}" for d in self.details)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(finding)}})
        step = "*Next step*\n" + escape(self.next_step)
        if self.command:
            step += f"\n```{escape(self.command)}```"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(step)}})
        buttons = [{"type": "button", "text": {"type": "plain_text", "text": label[:75]}, "url": url,
                    "action_id": f"link-{i}"} for i, (label, url) in enumerate(self.links) if url]
        if buttons:
            blocks.append({"type": "actions", "elements": buttons[:5]})
        return blocks

    def message(self) -> Message:
        return Message(self.text(), self.blocks(), dedup_key=self.dedup_key, kind=self.kind)


@dataclass(frozen=True)
class MailboxFinding:
    address: str
    state: str                          # rules.states PROOF_STATES
    reasons: list = field(default_factory=list)
    folder: str | None = None           # the first folder a finding names


@dataclass(frozen=True)
class ProofFacts:
    """What the glue knows about a failed proof (from the database, never from XCom)."""

    building: str
    domain: str | None = None
    mailboxes: list = field(default_factory=list)   # [MailboxFinding] not proven
    total_mailboxes: int | None = None


def _proof_next_step(facts: ProofFacts) -> tuple[str, str | None]:
    reasons = " ".join(r for m in facts.mailboxes for r in m.reasons).lower()
    first = facts.mailboxes[0].address if facts.mailboxes else None
    if "pass" in reasons and ("running" in reasons or "failed" in reasons or "intent" in reasons):
        return ("Run the copy pass again for the mailbox (safe: the ledger makes it exactly-once), "
                "then verify again; or clear the building's copy task in Airflow.",
                f"mailshift copy {first} --pass delta && mailshift verify {first}" if first else None)
    if "refused" in reasons or "extra" in reasons or "altered" in reasons or "missing" in reasons:
        return ("Open the building page for the findings. If the destination refused a message, ask the "
                "destination provider why (its words are in the finding); if a finding may stand, a named "
                "person waives it, then verify again.",
                f'mailshift waive {first} --finding ID --by "YOUR NAME" --reason "..."'
                if first else None)
    return ("Open the building page; run the verification again once the cause is fixed.",
            f"mailshift verify --building {facts.building}")


def proof_failed(building: str, *, facts: ProofFacts | None = None, failed_checks=(), run_url: str | None = None,
                 page_url: str | None = None, dedup_key: str | None = None) -> Alert:
    """A building whose zero-loss proof failed: which mailboxes, why, where to look, what to do."""
    facts = facts or ProofFacts(building)
    checks = sorted({check_words(c) for c in failed_checks})
    n = len(facts.mailboxes)
    if n:
        finding = (f"{n} mailbox(es)" + (f" of {facts.total_mailboxes}" if facts.total_mailboxes else "")
                   + " are not proven" + (": " + "; ".join(checks) if checks else "") + ".")
    else:
        finding = "The proof failed" + (": " + "; ".join(checks) if checks else "") + "."
    details = [f"{m.address}: {(m.reasons[0] if m.reasons else m.state.replace('_', ' '))}"[:300]
               for m in facts.mailboxes[:MAX_MAILBOXES]]
    if n > MAX_MAILBOXES:
        details.append(f"and {n - MAX_MAILBOXES} more on the building page")
    first = facts.mailboxes[0] if facts.mailboxes else None
    where = {"Domain": facts.domain, "Building": building,
             "Mailbox": first.address + (f" (+{n - 1})" if n > 1 else "") if first else None,
             "Folder": first.folder if first else None}
    step, command = _proof_next_step(facts)
    return Alert("proof_failed", ":warning:", f"Proof failed for building {building}", finding, step, command,
                 where, [("Open the Airflow run", run_url), ("Open the building in mailshift", page_url)],
                 dedup_key, details)


#: next steps by exception class name (the most specific first), for task failures
_TASK_STEPS = (
    ("AuthError", "A login was refused and is not retried (retries only lock accounts). Fix the credentials "
                  "of the connection named in the error, then clear the task in Airflow."),
    ("CredentialsError", "A mailbox's own password is missing or its file is unsafe (not retried). Add it to "
                         "the secrets backend (Variable <connection id>__password__<login>) or the 0600 "
                         "credentials file of that source system, then clear the task in Airflow."),
    ("IdentityMismatch", "A session could not be proven to be the intended mailbox, or the server is not the "
                         "one the inventory names (not retried, nothing was read). A person must check that "
                         "server's login setup or the inventory before the task is cleared."),
    ("FolderCollision", "Two source folders map to one destination name (not retried, nothing was written). "
                        "Say in the building spec's folder_map how to resolve it, then clear the task."),
    ("UnknownMailbox", "The inventory does not know that mailbox (not retried). Reload the exports or re-plan, "
                       "then clear the task."),
    ("ConfigError", "A setting is wrong (the error names it). Fix it, then clear the task in Airflow."),
    ("TransientError", "A server or the database did not answer after every retry. Check that it is up; "
                       "then clear the task in Airflow to run it again (safe)."),
    ("ProtocolError", "A server answered something mailshift cannot interpret. Call the provider of that "
                      "server with the error and the task log; clear the task once it is fixed."),
    ("GateBlocked", "The cutover gate is closed: open the mailshift pages for the reasons (not proven "
                    "mailboxes, open exceptions, notices) and fix or waive them."),
)
_DEFAULT_STEP = "Read the task log (button below), fix the cause, then clear the task in Airflow to run it again."


def task_failed(dag_id: str, task_id: str, try_number: int, error: str, *, label: str | None = None,
                run_url: str | None = None, log_url: str | None = None, page_url: str | None = None,
                where: dict | None = None, error_class: str | None = None, dedup_key: str | None = None) -> Alert:
    """A task that failed after its retries, with the Airflow links and the next step."""
    step = next((s for name, s in _TASK_STEPS if name == error_class), _DEFAULT_STEP)
    place = {"DAG": dag_id, "Task": task_id + (f" [{label}]" if label else ""), **(where or {})}
    return Alert("task_failed", ":red_circle:", f"Task {task_id} failed after {try_number} tries",
                 (error or "failed")[:600], step, None, place,
                 [("Open the task log", log_url), ("Open the Airflow run", run_url),
                  ("Open the building in mailshift", page_url)], dedup_key)
