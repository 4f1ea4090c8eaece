"""Cutover against the lab's real BIND9 and PostgreSQL: the gate decides, the swap writes once
under an exact-RRset prerequisite, and every refusal leaves the zone as it was.

Every test that changes the lab zone puts `MX 10 mx-old.lab.mailshift.test.` TTL 3600 back."""

from __future__ import annotations

import datetime as dt

import pytest

from mailshift.cutover import steps
from mailshift.cutover.gate import evaluate_gate
from mailshift.cutover.swap import GateBlocked
from mailshift.cutover.ttl import TtlNotReady, check_ttl, lower_ttl
from mailshift.protocols.dns import PrerequisiteMismatch
from mailshift.store import dns_changes as records
from mailshift.store.exception_records import raise_exception, resolve_if_open
from support.cutover import ORIGINAL_MX, force_mx, lab_provider, record_pass, record_proof, restored_zone
from support.mail import add_mailbox, snapshot, unique_login

pytestmark = pytest.mark.integration

NEW_MX = "10 mx-new.lab.mailshift.test."


@pytest.fixture
def provider(lab_config):
    return lab_provider(lab_config)


@pytest.fixture
def zone(lab_config):
    with restored_zone(lab_config):
        yield lab_config.dns_zone


def _two_mailboxes(db, cfg):
    a = add_mailbox(db, cfg, "src-a", unique_login("ca"))
    b = add_mailbox(db, cfg, "src-b", unique_login("cb"))
    return a, b


def _swap_rows(db):
    with db, db.cursor() as cur:
        cur.execute("SELECT id, status, approved_by, approved_at, applied_at, verified_at, old_rdata, new_rdata,"
                    " old_ttl, verification, detail FROM dns_change WHERE kind = 'mx_swap' ORDER BY id")
        return cur.fetchall()


def test_unproven_mailbox_blocks_swap_then_swap_happens_once_after_gate_passes(lab_config, db, provider, zone):
    cfg = lab_config
    a, b = _two_mailboxes(db, cfg)
    for mb in (a, b):
        record_pass(db, mb.id)
    record_proof(db, a.id)
    posted = []
    before = provider.get_rrset(zone, zone)
    assert before.rdatas == (ORIGINAL_MX,)

    v = evaluate_gate(db, zone)
    assert not v.passed
    assert [(r.kind, r.mailbox, r.building) for r in v.reasons] == [
        ("never_verified", b.address, f"B-src-b-{b.source_login}")]
    with pytest.raises(GateBlocked) as ei:
        steps.swap_step(db, provider, zone, [NEW_MX], approved_by="Sato Hanako", expected_old=[ORIGINAL_MX],
                        notify=posted.append)
    assert b.address in str(ei.value)
    assert posted and b.address in posted[0].payload("#c")["blocks"][0]["text"]["text"]
    after = provider.get_rrset(zone, zone)
    assert after == before                              # same records, TTL and SOA serial: nothing written
    assert _swap_rows(db) == []

    # a failed proof with an unwaived finding still blocks, named with the finding
    record_proof(db, b.id, verdict="failed", blocking_finding=True)
    v = evaluate_gate(db, zone)
    assert [r.kind for r in v.reasons] == ["unwaived_findings"] and "missing_at_dest" in v.reasons[0].detail
    # ... until a named person waives it (the only thing that changes the verdict)
    from mailshift.verify import create_waiver

    create_waiver(db, b.id, "Suzuki Ichiro", "customer confirmed the message is not needed", folder=None,
                  whole_mailbox=True)
    v = evaluate_gate(db, zone)
    assert v.passed, v.reason_texts()
    assert [w["approved_by"] for w in v.summary["waivers"]] == ["Suzuki Ichiro"]

    # an open blocking exception on the domain blocks again
    raise_exception(db, "manual_hold", "support desk asked to hold the domain", "hold-1", domain=zone)
    v = evaluate_gate(db, zone)
    assert [r.kind for r in v.reasons] == ["open_exception"]
    resolve_if_open(db, "hold-1", "Sato Hanako", "cleared")

    r = steps.swap_step(db, provider, zone, [NEW_MX], approved_by="Sato Hanako", expected_old=[ORIGINAL_MX],
                        requested_by="dag cutover__lab", notify=posted.append, timeout=30, interval=0.2)
    assert r["already_applied"] is False and r["new"] == [NEW_MX] and r["old"] == [ORIGINAL_MX]
    served = provider.get_rrset(zone, zone)
    assert served.rdatas == (NEW_MX,) and served.ttl == before.ttl and served.serial > before.serial
    rows = _swap_rows(db)
    assert len(rows) == 1
    _id, status, by, at, applied, verified, old, new, old_ttl, verification, _detail = rows[0]
    assert (status, by, old, new, old_ttl) == ("verified", "Sato Hanako", [ORIGINAL_MX], [NEW_MX], 3600)
    assert at and applied and verified and at <= applied <= verified
    assert verification["serial"] == served.serial
    assert set(verification["servers"]) == {f"ns1.{zone}.@127.0.0.1:{cfg.dns_port}"}

    # re-running the step (a retried task) recognises the swap: no second UPDATE, no new row
    r2 = steps.swap_step(db, provider, zone, [NEW_MX], approved_by="Sato Hanako", expected_old=[ORIGINAL_MX],
                         timeout=30, interval=0.2)
    assert r2["already_applied"] is True and r2["change_id"] == r["change_id"]
    assert provider.get_rrset(zone, zone).serial == served.serial
    assert len(_swap_rows(db)) == 1
    # and the pre-swap steps skip
    assert "skipped" in steps.gate_step(db, zone)
    assert "skipped" in steps.final_pass_step(db, zone, copy_fn=lambda *a: pytest.fail("copied"))
    # abort after the swap is refused: there is no rollback
    with pytest.raises(steps.SwapAlreadyApplied):
        steps.abort_step(db, zone, by="Sato Hanako", reason="changed my mind")


def test_changed_mx_at_the_server_aborts_without_writing(lab_config, db, provider, zone):
    cfg = lab_config
    a, b = _two_mailboxes(db, cfg)
    for mb in (a, b):
        record_pass(db, mb.id)
        record_proof(db, mb.id)
    assert evaluate_gate(db, zone).passed
    # someone else changed the MX after we recorded the old one
    force_mx(cfg, ["20 mx.other-provider.example."], 3600)
    before = provider.get_rrset(zone, zone)
    posted = []
    with pytest.raises(PrerequisiteMismatch) as ei:
        steps.swap_step(db, provider, zone, [NEW_MX], approved_by="Sato Hanako", expected_old=[ORIGINAL_MX],
                        notify=posted.append)
    assert "mx.other-provider.example" in str(ei.value) and "nothing was written" in str(ei.value)
    assert provider.get_rrset(zone, zone) == before          # records, TTL, serial unchanged
    assert "ABORTED" in posted[0].text
    rows = _swap_rows(db)
    assert [(r[1], r[2]) for r in rows] == [("failed", "Sato Hanako")] and rows[0][4] is None

    # the server-side prerequisite itself: even if our read was stale, BIND refuses the UPDATE
    with pytest.raises(PrerequisiteMismatch):
        provider.replace_rrset(zone, zone, [ORIGINAL_MX], [NEW_MX], 3600)
    assert provider.get_rrset(zone, zone) == before


def test_ttl_lowering_is_recorded_and_checked(lab_config, db, provider, zone):
    cfg = lab_config
    add_mailbox(db, cfg, "src-a", unique_login("ct"))
    with pytest.raises(TtlNotReady, match="no applied MX TTL lowering"):
        steps.check_ttl_step(db, provider, zone)
    ch = lower_ttl(db, provider, zone, 300, requested_by="dag lower_ttl__lab", timeout=30, interval=0.2)
    assert (ch.kind, ch.status, ch.old_ttl, ch.new_ttl, ch.new_rdata) == ("lower_ttl", "verified", 3600, 300,
                                                                         (ORIGINAL_MX,))
    served = provider.get_rrset(zone, zone)
    assert served.rdatas == (ORIGINAL_MX,) and served.ttl == 300
    # idempotent: a re-run does not write again
    again = lower_ttl(db, provider, zone, 300, requested_by="dag lower_ttl__lab", timeout=30, interval=0.2)
    assert again.id == ch.id and provider.get_rrset(zone, zone).serial == served.serial

    c = check_ttl(db, provider, zone)
    assert not c.ok and any("has not expired" in r for r in c.reasons)
    c = check_ttl(db, provider, zone, now=ch.applied_at + dt.timedelta(seconds=3601))
    assert c.ok, c.reasons
    assert steps.check_ttl_step(db, provider, zone, now=ch.applied_at + dt.timedelta(seconds=3601))["new_ttl"] == 300
    # the swap's expected old MX comes from the lowering record
    from mailshift.cutover.swap import expected_old_mx

    assert expected_old_mx(db, zone) == (ORIGINAL_MX,)
    # a server serving a higher TTL again (someone raised it) refuses
    force_mx(cfg, [ORIGINAL_MX], 3600)
    c = check_ttl(db, provider, zone, now=ch.applied_at + dt.timedelta(seconds=3601))
    assert not c.ok and any("TTL 3600, not the lowered 300" in r for r in c.reasons)


def test_abort_before_the_swap_leaves_dns_and_mailboxes_as_they_were(lab_config, db, provider, zone):
    from support.cutover import put_plain

    cfg = lab_config
    a = add_mailbox(db, cfg, "src-a", unique_login("cx"))
    put_plain(cfg, "src-a", a.source_login, 3)
    src_before = snapshot(cfg, "src-a", a.source_login)
    dst_before = snapshot(cfg, "dest", a.dest_login)
    dns_before = provider.get_rrset(zone, zone)
    posted = []
    with pytest.raises(GateBlocked):
        steps.gate_step(db, zone, notify=posted.append)
    out = steps.abort_step(db, zone, by="Sato Hanako", reason="gate refused: never copied", notify=posted.append)
    assert out["aborted"] and "DNS and mailboxes unchanged" in posted[-1].text
    assert provider.get_rrset(zone, zone) == dns_before
    assert snapshot(cfg, "src-a", a.source_login) == src_before
    assert snapshot(cfg, "dest", a.dest_login) == dst_before
    assert records.latest(db, zone, "mx_swap", ("planned", "applied", "verified")) is None
