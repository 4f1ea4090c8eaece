"""A whole domain cutover against the real lab (BIND9, Dovecot, PostgreSQL, the real copier and
verifier): TTL check, gate, final pass, re-verification, MX swap, late delivery to the OLD
server during propagation, drain, final proof. Nothing is lost, nothing is copied twice."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from lab.connections import airflow_conn_env
from mailshift.copy.copy_one import copy_one
from mailshift.cutover import steps
from mailshift.cutover.ttl import lower_ttl
from support.cutover import ORIGINAL_MX, lab_provider, put_plain, restored_zone
from support.mail import add_mailbox, ledger_states, snapshot, unique_login

pytestmark = pytest.mark.integration

NEW_MX = "10 mx-new.lab.mailshift.test."


def _digests(snap: dict) -> Counter:
    out = Counter()
    for items in snap.values():
        for (sha, _flags, _date), n in items.items():
            out[sha] += n
    return out


def test_late_delivery_after_the_swap_is_drained_and_proven(lab_config, db, monkeypatch, tmp_path):
    import hashlib

    cfg = lab_config
    for k, v in airflow_conn_env(cfg).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MAILSHIFT_REPORTS_DIR", str(tmp_path))
    provider = lab_provider(cfg)
    zone = cfg.dns_zone
    a = add_mailbox(db, cfg, "src-a", unique_login("fa"))
    b = add_mailbox(db, cfg, "src-b", unique_login("fb"))
    put_plain(cfg, "src-a", a.source_login, 3, "pre")
    put_plain(cfg, "src-b", b.source_login, 2, "pre")
    posted = []

    with restored_zone(cfg):
        # days ahead: prestage copy and the TTL lowering (1 s, so that 2 x TTL is a short drain)
        for mb in (a, b):
            assert copy_one(db, mb.id, "prestage").copied in (2, 3)
        ch = lower_ttl(db, provider, zone, 1, requested_by="dag mailshift_lower_ttl", timeout=30, interval=0.2)
        steps.reverify_step(db, zone)
        # cutover day (the clock is moved past applied_at + old TTL instead of waiting an hour)
        later = ch.applied_at + dt.timedelta(seconds=ch.old_ttl + 1)
        assert steps.check_ttl_step(db, provider, zone, now=later, notify=posted.append)["new_ttl"] == 1
        verdict = steps.gate_step(db, zone, notify=posted.append)
        assert verdict["passed"] and verdict["summary"]["mailboxes"] == 2
        # mail arriving before the final pass: the final pass copies it, the re-verification covers it
        put_plain(cfg, "src-a", a.source_login, 1, "before-final")
        assert steps.final_pass_step(db, zone)["copied"] == 1
        steps.reverify_step(db, zone)
        sw = steps.swap_step(db, provider, zone, [NEW_MX], approved_by="Sato Hanako",
                             notify=posted.append, timeout=30, interval=0.2)   # expected old: from the TTL record
        assert sw["old"] == [ORIGINAL_MX] and sw["new"] == [NEW_MX] and sw["ttl"] == 1
        assert provider.get_rrset(zone, zone).rdatas == (NEW_MX,)

        # late delivery to the OLD server during propagation: one before the drain starts, one
        # while it runs (after the first drain round of mailbox b)
        late_a = put_plain(cfg, "src-a", a.source_login, 1, "late")
        late_b = []
        calls = Counter()

        def copy_and_deliver(conn, mid, kind):
            s = copy_one(conn, mid, kind)
            calls[mid] += 1
            if mid == b.id and calls[mid] == 1:
                late_b.extend(put_plain(cfg, "src-b", b.source_login, 1, "late-during-drain"))
            return s

        d = steps.drain_step(db, zone, copy_fn=copy_and_deliver, poll_seconds=0.5)
        assert d["quiet_seconds"] == 2.0                    # 2 x the old MX's TTL at the swap
        assert d["copied"] == 2 and d["per_mailbox"] == {a.address: 1, b.address: 1}
        assert d["rounds"] >= 3

        fp = steps.final_proof_step(db, zone, notify=posted.append, drained=d["copied"])
        assert fp["passed"], fp["reasons"]
        assert fp["reports"] and all(p.endswith(".html") for p in fp["reports"])

        # nothing lost, nothing twice: the destination holds exactly the source's messages
        for mb, late in ((a, late_a), (b, late_b)):
            src = _digests(snapshot(cfg, mb.source, mb.source_login))
            dst = _digests(snapshot(cfg, "dest", mb.dest_login))
            assert dst == src
            for raw in late:
                assert dst[hashlib.sha256(raw).hexdigest()] == 1
        assert ledger_states(db, a.id) == Counter({1: 5}) and ledger_states(db, b.id) == Counter({1: 3})

        # a re-run drain (task retry) copies nothing again
        again = steps.drain_step(db, zone, poll_seconds=0.2, quiet_seconds=0.5)
        assert again["copied"] == 0
        # Slack: TTL ok (no message), swap done, summary with the report link
        texts = [m.text for m in posted]
        assert any("swapped" in t for t in texts) and any("cutover of" in t and "Report:" in t for t in texts)
