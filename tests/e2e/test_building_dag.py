"""A whole building migrated and proven through its real DAG with `dag.test()`, and a building
whose one mailbox the destination refuses: that task fails fast, the building is not proven,
Slack (the lab's stand-in, through the real slack-sdk) gets the alert, the others are copied."""

from __future__ import annotations

import psycopg2
import pytest

from lab import slack_standin, users
from mailshift.planning import snapshot as snap
from support.mail import snapshot

pytestmark = pytest.mark.integration


def _dag(e2e, building_id):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=e2e["env"]["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}
    return bag.dags[f"mailshift_building_{building_id}"]


def _building(e2e, source_system):
    return next(b for b in snap.load_all(e2e["snapshot_dir"]) if b.source_system == source_system)


def _states(dr):
    return {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}


def test_building_migrates_and_is_proven_through_its_dag(e2e):
    cfg, inv = e2e["cfg"], e2e["inventory"]
    building = _building(e2e, "src-a")
    slack_standin.reset(cfg)

    dr = _dag(e2e, building.id).test(run_conf={"pass_kind": "prestage"})

    assert dr.state == "success", _states(dr)
    conn = psycopg2.connect(e2e["dsn"])
    from mailshift.verify import proof_state

    for m in building.mailboxes:
        assert proof_state(conn, m.id).state in ("proven", "waived"), m.address
    with conn, conn.cursor() as cur:
        cur.execute("SELECT spec FROM building WHERE id = %s", (building.id,))
        folder_map = cur.fetchone()[0].get("folder_map") or {}
    conn.close()
    # What the servers hold, read directly: every source message is at the destination once,
    # in the folder the building's spec maps it to.
    for m in building.mailboxes:
        legacy = next(x for x in inv.mailboxes if x.address == m.address)
        src = snapshot(cfg, "src-a", legacy.login)
        dst = snapshot(cfg, "dest", legacy.dest_login, strip_x_uidl=True)
        for folder, items in src.items():
            assert dst.get(folder_map.get(folder, folder)) == items, (m.address, folder)
    assert not [c for c in slack_standin.recorded(cfg) if "failed" in str(c).lower()]


def test_refused_login_fails_fast_and_blocks_the_building(e2e):
    cfg, inv = e2e["cfg"], e2e["inventory"]
    building = _building(e2e, "src-b")
    assert len(building.mailboxes) >= 2
    victim = next(x for x in inv.mailboxes if x.address == building.mailboxes[0].address)
    others = [next(x for x in inv.mailboxes if x.address == m.address) for m in building.mailboxes[1:]]
    slack_standin.reset(cfg)
    users.remove_users(cfg, "dest", [victim.dest_login])
    try:
        dr = _dag(e2e, building.id).test(run_conf={"pass_kind": "prestage"})
    finally:
        users.ensure_users(cfg, "dest", [(victim.dest_login, None, None)])

    assert dr.state == "failed"
    tis = {(ti.task_id, ti.map_index): ti for ti in dr.get_task_instances()}
    failed_copy = [ti for (task, _), ti in tis.items() if task == "copy" and ti.state == "failed"]
    assert len(failed_copy) == 1 and failed_copy[0].try_number == 1, "a refused login must not be retried"
    assert tis[("mark_proven", -1)].state != "success"
    # The rest of the building was copied: their ledgers hold their messages.
    conn = psycopg2.connect(e2e["dsn"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT m.address, count(g.*) FROM mailbox m LEFT JOIN message g ON g.mailbox_id = m.id"
                    " AND g.state = 1 WHERE m.address = ANY(%s) GROUP BY m.address",
                    ([o.address for o in others] + [victim.address],))
        copied = dict(cur.fetchall())
    conn.close()
    assert copied[victim.address] == 0
    for o in others:
        assert copied[o.address] > 0, o.address
    # Slack heard about it, without any secret in the message.
    posts = [c for c in slack_standin.recorded(cfg, method="chat.postMessage")]
    texts = " ".join(str(p) for p in posts)
    assert "copy" in texts and "failed" in texts.lower()
    for server in cfg.servers.values():
        assert server.admin_password not in texts
    assert cfg.slack_token not in texts
