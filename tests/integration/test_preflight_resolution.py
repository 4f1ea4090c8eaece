"""A preflight problem that a later copy pass disproves (the server was down for a moment, a login
failed once) is resolved by that pass, so it does not hold the gate shut; one that the pass
confirms (a message refused) stays open."""

from __future__ import annotations

import pytest

from lab.connections import airflow_conn_env
from mailshift.copy.copy_one import copy_one
from mailshift.store.exception_records import open_exceptions, raise_exception
from support.cutover import put_plain
from support.mail import add_mailbox, unique_login

pytestmark = pytest.mark.integration


def test_finished_pass_resolves_the_preflight_exception(lab_config, db, monkeypatch):
    for k, v in airflow_conn_env(lab_config).items():
        monkeypatch.setenv(k, v)
    mb = add_mailbox(db, lab_config, "src-a", unique_login("pf"))
    put_plain(lab_config, "src-a", mb.source_login, 3, tag="pf")
    raise_exception(db, "preflight_unreachable", f"{mb.address}: unreachable", f"preflight:{mb.id}",
                    mailbox_id=mb.id, detail={"problems": ["source: connection refused"]})
    assert [e["mailbox_id"] for e in open_exceptions(db)] == [mb.id]

    summary = copy_one(db, mb.address, "prestage")

    assert summary.copied == 3 and not summary.refused
    assert open_exceptions(db) == []
    with db, db.cursor() as cur:
        cur.execute("SELECT status, resolved_by, resolution FROM exception WHERE dedup_key = %s",
                    (f"preflight:{mb.id}",))
        status, by, why = cur.fetchone()
    assert (status, by) == ("resolved", "copy") and "prestage pass finished" in why
