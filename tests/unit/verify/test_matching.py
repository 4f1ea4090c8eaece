"""Matching logic of the verifier, without servers."""

from __future__ import annotations

import datetime as dt
import hashlib

from mailshift.rules import states
from mailshift.rules.waivers import Waiver, apply_waivers
from mailshift.verify.matching import LedgerInfo, SourceItem, match_group
from mailshift.verify.recount import SideFolder, SideMessage, _digest_into, norm_flags

D = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def msg(uid, body, flags=(), date=D):
    m = SideMessage(uid, len(body), norm_flags(flags), tuple(flags), date)
    _digest_into(m, body, "full")
    return m


def led(uid, body, dest_uid, state=states.COPIED, uidl=None):
    return LedgerInfo(1, uid, state, int(states.Transform.X_UIDL if uidl else 0), uidl, dest_uid, len(body),
                      hashlib.sha256(body).digest(), None, "refused: too big" if state == states.REFUSED else None)


def test_clean_match_with_x_uidl_reversed_and_source_duplicates():
    a, b = b"Subject: a\r\nMessage-ID: <a@x>\r\n\r\nA\r\n", b"Subject: b\r\n\r\nB\r\n"
    src = [SourceItem("INBOX", 1, msg(1, a), led(1, a, 10, uidl="U1")),
           SourceItem("INBOX", 1, msg(2, b), led(2, b, 11)),
           SourceItem("INBOX", 1, msg(3, b), led(3, b, 12))]          # byte-identical pair at the source
    dest = SideFolder("INBOX", 7, None, {10: msg(10, states.x_uidl_header("U1") + a), 11: msg(11, b), 12: msg(12, b)})
    r = match_group("INBOX", dest, src, [], [("INBOX", 1)])
    assert r.findings == [] and r.matched == 3 and r.transformed == 1
    assert r.transform_bytes == len(states.x_uidl_header("U1"))
    assert r.dest_bytes - r.transform_bytes == r.src_bytes


def test_every_kind_is_named():
    a, b, c = b"Message-ID: <a@x>\r\n\r\nA\r\n", b"Message-ID: <b@x>\r\n\r\nB\r\n", b"Message-ID: <c@x>\r\n\r\nC\r\n"
    gone = b"Message-ID: <g@x>\r\n\r\nG\r\n"
    big = b"Message-ID: <big@x>\r\n\r\n" + b"x" * 100
    src = [SourceItem("INBOX", 1, msg(1, a, ("\\Seen",)), led(1, a, 10)),
           SourceItem("INBOX", 1, msg(2, b), led(2, b, 11)),
           SourceItem("Sent Items", 2, msg(3, c), led(3, c, 12)),
           SourceItem("INBOX", 1, msg(4, big), led(4, big, None, states.REFUSED))]
    dest = SideFolder("INBOX", 7, None, {
        10: msg(10, a),                                   # flags lost
        13: msg(13, b.replace(b"B", b"b")),               # altered (paired by Message-ID and date)
        14: msg(14, a, ("\\Seen",)),                      # duplicate of source UID 1
        15: msg(15, b"Subject: stray\r\n\r\n"),           # from nowhere
        16: msg(16, gone),                                # copied, expunged at the source since
    })
    r = match_group("INBOX", dest, src, [led(9, gone, 16, states.SOURCE_EXPUNGED)],
                    [("INBOX", 1), ("Sent Items", 2)])
    got = {(f.kind, f.src_folder, f.src_uid, f.dest_uid, f.blocking) for f in r.findings}
    assert got == {("missing_at_dest", "Sent Items", 3, 12, True),
                   ("missing_at_dest", "INBOX", 4, None, True),
                   ("digest_mismatch", "INBOX", 2, 13, True),
                   ("duplicate_at_dest", "INBOX", 1, 14, True),
                   ("unexpected_at_dest", None, None, 15, True),
                   ("flags_mismatch", "INBOX", 1, 10, True),
                   ("expunged_at_source", None, 9, 16, False)}, got
    refused = next(f for f in r.findings if f.src_uid == 4)
    assert "refused" in refused.detail and "too big" in refused.detail
    assert r.expunged_kept == 1 and r.matched == 1


def test_missing_folder_and_date():
    a = b"Subject: a\r\n\r\nA\r\n"
    src = [SourceItem("Q&A", 3, msg(1, a, date=D), led(1, a, 5))]
    r = match_group("Q&A", None, src, [], [("Q&A", 3)])
    assert sorted(f.kind for f in r.findings) == ["folder_missing", "missing_at_dest"]
    dest = SideFolder("Q&A", 7, None, {5: msg(5, a, date=D + dt.timedelta(hours=1))})
    r = match_group("Q&A", dest, src, [], [("Q&A", 3)])
    assert [f.kind for f in r.findings] == ["date_mismatch"]


def test_waivers_cover_only_what_they_name():
    a = b"Subject: a\r\n\r\nA\r\n"
    src = [SourceItem("INBOX", 1, msg(1, a), led(1, a, 5)), SourceItem("INBOX", 1, msg(2, a + b"2"), led(2, a, 6))]
    dest = SideFolder("INBOX", 7, None, {9: msg(9, b"stray\r\n\r\n")})
    r = match_group("INBOX", dest, src, [], [("INBOX", 1)])
    w = Waiver(1, 1, "message", 1, "INBOX", 1, None, None, None, "why", None, "tanaka", D)
    assert apply_waivers(r.findings, [w]) == 1
    assert {f.src_uid for f in r.findings if f.waiver_id} == {1}
    revoked = Waiver(2, 1, "mailbox", None, None, None, None, None, None, "why", None, "tanaka", D, D, "suzuki")
    stray = Waiver(3, 1, "dest_message", None, None, None, "INBOX", 7, 9, "why", None, "tanaka", D)
    assert apply_waivers(r.findings, [revoked, stray]) == 1
    assert [f.kind for f in r.findings if f.waiver_id == 3] == ["unexpected_at_dest"]


def test_the_declared_x_uidl_removal_is_reversed_exactly():
    """The ledger declares which stale X-UIDL field the copier took out (transform_detail); the
    destination must hold exactly the source without it, behind the new X-UIDL line."""
    from mailshift.protocols.pop3 import strip_x_uidl_fields

    stale = b"Subject: s\r\nX-UIDL: stale\r\nMessage-ID: <s@x>\r\n\r\nS\r\n"
    clean, removed = strip_x_uidl_fields(stale)
    detail = {"removed": [[o, c.hex()] for o, c in removed]}

    def ledger(uid, dest_uid, declared):
        return LedgerInfo(1, uid, states.COPIED, int(states.Transform.X_UIDL), "U9", dest_uid, len(stale),
                          hashlib.sha256(stale).digest(), None, None, declared)

    def source(uid, declared):
        m = SideMessage(uid, len(stale), norm_flags(()), (), D)
        _digest_into(m, stale, "full", ledger(uid, 0, declared).removed)
        return m

    dest = SideFolder("INBOX", 7, None, {10: msg(10, states.x_uidl_header("U9") + clean)})
    ok = match_group("INBOX", dest, [SourceItem("INBOX", 1, source(1, detail), ledger(1, 10, detail))], [],
                     [("INBOX", 1)])
    assert ok.findings == [] and ok.matched == 1 and ok.transform_bytes == len(states.x_uidl_header("U9")) - len(
        removed[0][1])
    # the ledger declares nothing removed: the destination must then hold the source unchanged
    none = match_group("INBOX", dest, [SourceItem("INBOX", 1, source(1, None), ledger(1, 10, None))], [],
                       [("INBOX", 1)])
    assert [f.kind for f in none.findings] == ["digest_mismatch"]
    # a declaration that does not fit the source bytes (wrong offset) matches nothing
    wrong = {"removed": [[removed[0][0] + 1, removed[0][1].hex()]]}
    bad = match_group("INBOX", dest, [SourceItem("INBOX", 1, source(1, wrong), ledger(1, 10, wrong))], [],
                      [("INBOX", 1)])
    assert [f.kind for f in bad.findings] == ["digest_mismatch"]
    assert "declares removed (transform_detail) are not where it says" in bad.findings[0].detail


def test_remove_declared_takes_out_only_x_uidl_fields_where_declared():
    from mailshift.verify.recount import remove_declared

    raw = b"A: 1\r\nX-UIDL: a\r\nB: 2\r\n\r\nbody\r\n"
    assert remove_declared(raw, [(6, b"X-UIDL: a\r\n")]) == b"A: 1\r\nB: 2\r\n\r\nbody\r\n"
    assert remove_declared(raw, [(7, b"X-UIDL: a\r\n")]) is None          # not at its offset
    assert remove_declared(raw, [(17, b"B: 2\r\n")]) is None                # not an X-UIDL field
    assert remove_declared(raw, []) == raw


def test_an_altered_ledger_row_pairs_with_its_recorded_destination_uid():
    """State altered (5) keeps the destination UID of the stored copy: the verifier pairs the two
    by it, so the finding names both UIDs (no Message-ID needed)."""
    a = b"Subject: \xe6\x97\xa5\r\n\r\nA\r\n"
    stored = b"Subject: XXX\r\n\r\nA\r\n"
    row = LedgerInfo(1, 1, states.ALTERED, 0, None, 12, len(a), hashlib.sha256(a).digest(), None,
                     "header_bytes_replaced: stored 17 bytes ...")
    assert row.copy_class == "header_bytes_replaced"
    dest = SideFolder("INBOX", 7, None, {11: msg(11, b"Subject: other\r\n\r\nB\r\n"), 12: msg(12, stored)})
    r = match_group("INBOX", dest, [SourceItem("INBOX", 1, msg(1, a), row)], [], [("INBOX", 1)])
    got = {(f.kind, f.src_uid, f.dest_uid) for f in r.findings}
    assert got == {("digest_mismatch", 1, 12), ("unexpected_at_dest", None, 11)}
