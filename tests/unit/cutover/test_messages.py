"""Slack texts of the cutover (issue #16): text from outside (domains, reasons, server answers,
names) is escaped, so `<`, `>` and `&` never form a link or a mention; a report on a worker is
named, never linked as a path. Posted through the real slack-sdk to the lab's stand-in."""

from __future__ import annotations

import uuid

from mailshift.cutover import messages
from mailshift.notify import slack

NASTY = "<!channel> a&b <http://evil.example|click>"


def _all(m) -> str:
    return m.text + " " + str(m.blocks)


def test_every_cutover_message_escapes_outside_text():
    built = [messages.ttl_not_ready("d.test", [NASTY]),
             messages.swap_prerequisite_failed("d.test", ["10 mx-old."], [NASTY]),
             messages.swap_done("d.test", ["10 mx-old."], ["10 mx-new."], NASTY, 1, 7),
             messages.cutover_finished("d.test", False, 3, 10, 1000, 0, 1, [NASTY], ["/srv/reports/B-1/latest.html"]),
             messages.aborted("d.test", "ops", NASTY),
             messages.gate_blocked("d.test", [NASTY])]
    for m in built:
        text = _all(m)
        assert "&lt;!channel&gt; a&amp;b &lt;http://evil.example|click&gt;" in text, text
        assert "<!channel>" not in text and "<http://evil" not in text
    finished = _all(built[3])
    assert "latest.html" in finished and "/srv/reports" not in finished
    linked = messages.cutover_finished("d.test", True, 1, 1, 1, 0, 0, [], ["https://ui.example/mailshift/report/B-1"])
    assert "<https://ui.example/mailshift/report/B-1|proof report>" in str(linked.blocks)


def test_the_stand_in_receives_the_escaped_text(lab_config):
    from lab import slack_standin

    channel = f"#t-{uuid.uuid4().hex[:10]}"
    client = slack.web_client(lab_config.slack_token, lab_config.slack_base_url)
    slack.post(client, messages.aborted("lab.mailshift.test", "ops <b>", NASTY), channel)
    (sent,) = [c["params"] for c in slack_standin.recorded(lab_config, "chat.postMessage")
               if c["params"].get("channel") == channel]
    assert "by ops &lt;b&gt;: &lt;!channel&gt; a&amp;b" in sent["text"]
    assert "<!channel>" not in str(sent)
