"""Issue #16, done-when: a failed proof in a real building DAG run (`dag.test()`) produces exactly
one Slack message (the lab's stand-in records it), naming the mailbox, linking the Airflow run
and the building's mailshift page over http (never a file path), and saying what to do next.

The proof is made to fail the way it would in production: a message the ledger says was copied
is gone from the destination (deleted there after the copy). The message is put back afterwards
(same bytes, flags and date) and the mailbox proven again, so the other e2e tests see the
building as it was."""

from __future__ import annotations

import psycopg2
import pytest

from lab import slack_standin
from mailshift.planning import snapshot as snap
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from support.mail import imap

pytestmark = pytest.mark.integration


def _dag(e2e, building_id):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=e2e["env"]["AIRFLOW__CORE__DAGS_FOLDER"])
    return bag.dags[f"mailshift_building_{building_id}"]


def _take_one(cfg, login: str) -> OutgoingMessage:
    """Delete the first INBOX message at the destination; return it for putting back."""
    with imap(cfg, "dest", login) as c:
        c.select_folder("INBOX")
        uid = sorted(c.search("ALL"))[0]
        d = c.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid]
        c.delete_messages([uid])
        c.expunge()
    flags = tuple(f for f in d[b"FLAGS"] if f.lower() != b"\\recent")
    return OutgoingMessage(flags, d[b"INTERNALDATE"], d[b"BODY[]"])


def test_failed_proof_pages_exactly_once_with_mailbox_links_and_next_step(e2e):
    from mailshift.copy.copy_one import copy_one
    from mailshift.protocols.endpoint import endpoint_from_env
    from mailshift.verify import verify_mailbox

    cfg, inv = e2e["cfg"], e2e["inventory"]
    building = next(b for b in snap.load_all(e2e["snapshot_dir"]) if b.source_system == "src-b")
    imap_boxes = [m for m in building.mailboxes
                  if next(x for x in inv.mailboxes if x.address == m.address).protocol == "imap"]
    victim = next(x for x in inv.mailboxes if x.address == imap_boxes[0].address)
    conn = psycopg2.connect(e2e["dsn"])
    for m in building.mailboxes:       # copied, as a prestage pass leaves them
        copy_one(conn, m.id, "prestage", resolve=endpoint_from_env)
    taken = _take_one(cfg, victim.dest_login)
    slack_standin.reset(cfg)
    try:
        dag = _dag(e2e, building.id)
        dr = dag.test(run_conf={"pass_kind": "delta"})
        tis = {ti.task_id: ti for ti in dr.get_task_instances() if ti.map_index in (-1, 0)}
        assert dr.state == "failed" and tis["mark_proven"].state == "failed"
        assert tis["mark_proven"].try_number == 1
        posts = [c["params"] for c in slack_standin.recorded(cfg, "chat.postMessage")]
    finally:
        with imap(cfg, "dest", victim.dest_login) as c:
            assert multiappend(c, "INBOX", [taken]).ok
    assert len(posts) == 1, [p["text"] for p in posts]
    (alert,) = posts
    text, blocks = alert["text"], str(alert["blocks"])
    assert f"Proof failed for building {building.id}" in text
    assert victim.address in text and victim.address in blocks
    assert "Next step" in text and "*Next step*" in blocks
    import json

    elements = [e for b in (json.loads(alert["blocks"]) if isinstance(alert["blocks"], str) else alert["blocks"])
                if b["type"] == "actions" for e in b["elements"]]
    urls = [e["url"] for e in elements]
    base = e2e["env"]["AIRFLOW__API__BASE_URL"].rstrip("/")
    assert base.startswith("http://") and len(urls) == 2, urls
    assert urls[0].startswith(f"{base}/dags/{dag.dag_id}/runs/")
    assert urls[1] == f"{base}/mailshift/building/{building.id}"
    assert "/reports/" not in text + blocks and "latest.html" not in text + blocks
    # put back: the mailbox is proven again for the other tests
    verdict = verify_mailbox(conn, victim.address, endpoint_from_env)
    conn.close()
    assert verdict.state in ("proven", "waived"), verdict.as_dict()


def test_wave_summary_pages_once_per_outcome(e2e, monkeypatch):
    """The wave's summary message is its alert: its failure callback stays silent, and a cleared
    summary with the same figures does not post again (run-level dedup key)."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from mailshift.airflow import callbacks, wave

    cfg = e2e["cfg"]
    ti = SimpleNamespace(dag_id="mailshift_wave_1", run_id=f"manual__{e2e['root'].name}", task_id="summary",
                         map_index=-1, try_number=1, log_url=None)
    monkeypatch.setattr(wave, "get_current_context", lambda: {"ti": ti})
    monkeypatch.setattr(callbacks, "_current_key", lambda: callbacks.alerts.problem_key(
        ti.dag_id, ti.run_id, ti.task_id, -1))
    slack_standin.reset(cfg)
    for _ in range(2):                       # the task, then the same task cleared and run again
        try:
            wave.summary.function(1, None)
        except AirflowFailException as exc:
            callbacks.task_failure_alert({"ti": ti, "exception": exc})
    posts = [c["params"] for c in slack_standin.recorded(cfg, "chat.postMessage")]
    assert len(posts) == 1, [p["text"] for p in posts]
    (msg,) = posts
    base = e2e["env"]["AIRFLOW__API__BASE_URL"].rstrip("/")
    assert "wave 1 finished" in msg["text"]
    body = str(msg["blocks"])
    assert f"{base}/dags/mailshift_wave_1/runs/{ti.run_id}" in body and f"{base}/mailshift/wave/1" in body
    if "buildings proven" in msg["text"] and ":warning:" in msg["text"]:
        assert "Next step" in body
