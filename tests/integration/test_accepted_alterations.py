"""Issue #13 point 4 against a real altering destination: Cyrus (munge8bit, its default) stores
raw 8-bit header bytes as `X` and answers OK. The copier records the message as `altered`
(header_bytes_replaced); the proof passes only when the building spec accepts that class by name,
and then says how many messages it accepted and under which class."""

from __future__ import annotations

import datetime as dt

import pytest

from mailshift.copy.copy_one import copy_one
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from mailshift.verify import verify_building, verify_mailbox
from support import realservers as rs
from support.mail import ledger_states

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fresh_probes")]

WHEN = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=9)))


def message(i: int, extra: bytes = b"") -> bytes:
    return (b"From: a@example.net\r\nSubject: m" + str(i).encode() + b"\r\nMessage-ID: <m" + str(i).encode()
            + b"@example.net>\r\n" + extra + b"\r\nbody " + str(i).encode() + b"\r\n")


RAW8 = message(2, "Subject2: 日本語\r\n".encode())


def fill(cfg, mb, folders: dict[str, list[bytes]]) -> None:
    with rs.imap(cfg, mb.source, mb.source_login, mb.source_password) as c:
        for folder, raws in folders.items():
            if folder != "INBOX":
                c.create_folder(folder)
            for raw in raws:
                assert multiappend(c, folder, [OutgoingMessage((b"\\Seen",), WHEN, raw)]).ok


def src_a_to_cyrus(cfg, tmp_path, mb):
    """Dovecot src-a (master user) -> Cyrus destination (the mailbox's own password)."""
    from lab.connections import imap_uri
    from mailshift.protocols.endpoint import parse_endpoint

    cred = rs.write_credentials(tmp_path / "dest.credentials", {mb.dest_login: mb.dest_password})
    eps = {"mailshift_src_a": parse_endpoint(imap_uri(cfg, "src-a")),
           "mailshift_dest": rs.endpoint(cfg, "cyrus-dest", "user", cred)}
    return eps.__getitem__


def copied_with_one_alteration(cfg, db, tmp_path, accepted: list[str]):
    mb = rs.add_mailbox(db, cfg, "src-a", spec={"accepted_alterations": accepted})
    fill(cfg, mb, {"INBOX": [message(1), RAW8, message(3)], "Box": [message(4)]})
    resolve = src_a_to_cyrus(cfg, tmp_path, mb)
    summary = copy_one(db, mb.id, "prestage", resolve=resolve)
    assert (summary.copied, summary.altered) == (3, 1)
    assert [a["class"] for a in summary.alterations] == ["header_bytes_replaced"]
    assert ledger_states(db, mb.id) == {1: 3, 5: 1}           # still 'altered' in the ledger: never 'copied'
    return mb, resolve


def test_accepted_class_is_proven_and_counted(lab_config, db, tmp_path):
    mb, resolve = copied_with_one_alteration(lab_config, db, tmp_path, ["header_bytes_replaced"])
    v = verify_mailbox(db, mb.id, resolve)
    assert (v.state, v.verdict, v.blocking_open) == ("proven", "proven", 0), v.reasons
    assert v.accepted_alterations == {"header_bytes_replaced": 1}
    (f,) = [f for f in v.findings if f.kind == "digest_mismatch"]
    assert (f.blocking, f.accepted, f.alteration_class, f.copy_class) == (False, True, "header_bytes_replaced",
                                                                          "header_bytes_replaced")
    assert f.detail.startswith(f"accepted alteration (header_bytes_replaced) by building {mb.building}'s spec "
                               "accepted_alterations: ")
    assert f"class header_bytes_replaced: stored {len(RAW8)} bytes sha256 " in f.detail
    assert "9 byte(s) differ" in f.detail
    with db, db.cursor() as cur:
        cur.execute("SELECT verdict, detail FROM proof WHERE id = %s", (v.proof_id,))
        verdict, detail = cur.fetchone()
        cur.execute("SELECT altered, altered_open, accepted_altered, accepted_altered_bytes, waived,"
                    " src_bytes_net = dest_bytes_net FROM reconciliation WHERE verify_run_id = %s AND level = 'mailbox'",
                    (v.verify_run_id,))
        rec = cur.fetchone()
        cur.execute("SELECT blocking, alteration_class FROM reconciliation_finding WHERE mailbox_id = %s"
                    " AND kind = 'digest_mismatch'", (mb.id,))
        stored = cur.fetchall()
    assert verdict == "proven"
    assert detail["accepted_alterations"] == {"header_bytes_replaced": 1}
    assert detail["accepted_by"] == f"building {mb.building} spec accepted_alterations"
    assert rec == (1, 0, 1, 0, 0, True)          # counted as altered, accepted, nothing waived, bytes agree
    assert stored == [(False, "header_bytes_replaced")]


def test_accepted_alteration_in_the_building_report(lab_config, db, tmp_path):
    """The building run: GX passes (src_bytes_net = dest_bytes_net, altered_open = 0) and the
    HTML report names the accepted class and count."""
    mb, resolve = copied_with_one_alteration(lab_config, db, tmp_path, ["header_bytes_replaced"])
    bv = verify_building(db, mb.building, resolve, reports=tmp_path / "reports")
    assert bv.proven and bv.gx_success, bv.gx_result
    html = (tmp_path / "reports" / mb.building / "latest.html").read_text()
    assert ("<b>1</b> altered message(s) accepted as altered, not blocking the proof: "
            "<b>1</b> header_bytes_replaced") in html
    assert "no (accepted)" in html


@pytest.mark.parametrize("accepted", [[], ["line_endings", "truncated"]], ids=["none", "other-classes"])
def test_a_class_the_spec_does_not_name_blocks(lab_config, db, tmp_path, accepted):
    mb, resolve = copied_with_one_alteration(lab_config, db, tmp_path, accepted)
    v = verify_mailbox(db, mb.id, resolve)
    assert (v.state, v.verdict, v.blocking_open) == ("not_proven", "failed", 1)
    assert v.accepted_alterations == {}
    (f,) = [f for f in v.findings if f.kind == "digest_mismatch"]
    assert f.blocking and not f.accepted and f.alteration_class == "header_bytes_replaced"
    if accepted:
        assert f.detail.endswith(f"; class header_bytes_replaced is not in building {mb.building}'s "
                                 "accepted_alterations (line_endings, truncated)")
    from mailshift.rules.proof import proof_state

    state = proof_state(db, mb.id)
    assert state.state == "not_proven" and any("digest_mismatch" in r for r in state.reason_texts())
