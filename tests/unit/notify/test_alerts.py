"""Operator alerts (issue #16): Block Kit, plain words, escaping, links, next step — posted through
the real slack-sdk client to the lab's Slack stand-in and read back from its record."""

from __future__ import annotations

import uuid

import pytest

from mailshift.notify import alerts, slack
from mailshift.notify.alerts import MailboxFinding, ProofFacts

BASE = "https://airflow.example.net"


def _facts() -> ProofFacts:
    return ProofFacts("B-0042", "example.jp", [
        MailboxFinding("tanaka@example.jp", "not_proven",
                       ["2 blocking finding(s) of verification run 7 without a waiver: finding #11 missing "
                        "(folder INBOX/<Work> & Co UID 5 -> - UID -): not at the destination"], "INBOX/<Work> & Co"),
        MailboxFinding("sato@example.jp", "not_proven", ["never verified (no proof row)"]),
    ], total_mailboxes=40)


def _proof_alert() -> alerts.Alert:
    return alerts.proof_failed("B-0042", facts=_facts(),
                               failed_checks=["expect_column_pair_values_to_be_equal", "ExpectColumnValuesToBeBetween"],
                               run_url=alerts.dag_run_url(BASE, "mailshift_building_B-0042", "manual__2026-01-01"),
                               page_url=alerts.building_page_url(BASE, "B-0042"),
                               dedup_key="task:d:r:mark_proven:-1")


def test_escape():
    assert slack.escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert slack.escape("&amp;") == "&amp;amp;"


def test_plain_words_not_gx_jargon():
    a = _proof_alert()
    text = a.text() + str(a.blocks())
    assert "expect_" not in text and "Expect" not in text
    assert "the destination does not hold the same number of messages or bytes as the source" in a.finding
    assert "messages are missing, extra, altered or refused at the destination" in a.finding
    assert a.finding.startswith("2 mailbox(es) of 40 are not proven")


def test_proof_alert_fields_and_escaping():
    m = _proof_alert().message()
    blocks = m.blocks
    assert blocks[0]["text"]["text"] == ":warning: *Proof failed for building B-0042*"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in blocks[1]["fields"]}
    assert fields == {"*Domain*": "example.jp", "*Building*": "B-0042", "*Mailbox*": "tanaka@example.jp (+1)",
                      "*Folder*": "INBOX/&lt;Work&gt; &amp; Co"}
    assert "tanaka@example.jp: 2 blocking finding(s)" in blocks[2]["text"]["text"]
    assert "&lt;Work&gt; &amp; Co" in blocks[2]["text"]["text"] and "<Work>" not in str(blocks)
    step = blocks[3]["text"]["text"]
    assert step.startswith("*Next step*\n") and "mailshift waive tanaka@example.jp --finding ID" in step
    urls = [e["url"] for e in blocks[4]["elements"]]
    assert urls == [f"{BASE}/dags/mailshift_building_B-0042/runs/manual__2026-01-01",
                    f"{BASE}/mailshift/building/B-0042"]
    assert not any(u.startswith("/") or "file:" in u for u in urls)
    assert "&lt;Work&gt; &amp; Co" in m.text and "<Work>" not in m.text


def test_next_step_for_an_interrupted_copy():
    facts = ProofFacts("B-1", "d.jp", [MailboxFinding("a@d.jp", "not_proven",
                                                      ["latest delta pass #3 failed: timeout"])])
    a = alerts.proof_failed("B-1", facts=facts)
    assert a.command == "mailshift copy a@d.jp --pass delta && mailshift verify a@d.jp"
    many = ProofFacts("B-1", "d.jp", [MailboxFinding(f"m{i}@d.jp", "not_proven", ["x"]) for i in range(9)])
    b = alerts.proof_failed("B-1", facts=many)
    assert b.details[-1] == "and 4 more on the building page"


def test_task_failed_alert_links_and_step():
    a = alerts.task_failed("mailshift_building_B-7", "copy", 4, "TransientError: imap <x> & y: timed out",
                           label="a@d.jp (+4)", run_url=alerts.dag_run_url(BASE, "mailshift_building_B-7", "r1"),
                           log_url=f"{BASE}/dags/mailshift_building_B-7/runs/r1/tasks/copy/mapped/0?try_number=4",
                           page_url=alerts.building_page_url(BASE, "B-7"), where={"Building": "B-7"},
                           error_class="TransientError")
    m = a.message()
    assert "clear the task in Airflow to run it again" in a.next_step
    assert "&lt;x&gt; &amp; y" in m.blocks[2]["text"]["text"]
    assert [e["text"]["text"] for e in m.blocks[-1]["elements"]] == [
        "Open the task log", "Open the Airflow run", "Open the building in mailshift"]


def test_legacy_builders_still_escape():
    m = slack.gx_failed("B-<9>", ["expect_table_row_count_to_equal"], "/tmp/reports/B-9/latest.html")
    assert "/tmp/reports" not in str(m.blocks) + m.text and "B-&lt;9&gt;" in m.text
    assert m.kind == "proof_failed"


@pytest.fixture
def standin(lab_config):
    from lab import slack_standin

    client = slack.web_client(lab_config.slack_token, lab_config.slack_base_url)
    channel = f"#t-{uuid.uuid4().hex[:10]}"

    def read():
        return [c["params"] for c in slack_standin.recorded(lab_config, "chat.postMessage")
                if c["params"].get("channel") == channel]
    return client, channel, read


def test_posted_through_slack_sdk_to_the_standin(standin):
    client, channel, read = standin
    slack.post(client, _proof_alert().message(), channel)
    (sent,) = read()
    assert sent["blocks"][1]["fields"][2]["text"] == "*Mailbox*\ntanaka@example.jp (+1)"
    assert sent["blocks"][4]["elements"][1]["url"] == f"{BASE}/mailshift/building/B-0042"
    assert "Next step" in sent["text"] and "&lt;Work&gt;" in str(sent["blocks"])
