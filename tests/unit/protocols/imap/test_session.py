"""The fast FETCH parser gives exactly imapclient's result, and hands anything unusual to it."""

from __future__ import annotations

import pytest
from imapclient.response_parser import parse_fetch_response

from mailshift.protocols.imap.session import _parse_fetch_fast, parse_fetch

META = [
    b'1 (UID 4 RFC822.SIZE 1550 FLAGS (\\Seen $Label1 Junk) INTERNALDATE "05-Feb-2016 04:48:26 +0900")',
    b'2 (UID 9 RFC822.SIZE 12 FLAGS () INTERNALDATE " 7-Dec-1999 23:59:59 -0330")',
    b'3 (RFC822.SIZE 99 UID 11 INTERNALDATE "29-Feb-2024 00:00:00 +0000" FLAGS (\\Answered \\Flagged))',
]
BODIES = [
    (b"1 (UID 4 BODY[] {11}", b"Subject: x\n"), b")",
    (b"2 (UID 9 FLAGS (\\Seen) BODY[] {0}", b""), b")",
]


@pytest.mark.parametrize("data", [META, BODIES, [b"1 (UID 4 FLAGS (\\Seen))", b"1 (UID 4 RFC822.SIZE 7)"]],
                         ids=["metadata", "bodies", "merge"])
def test_same_result_as_imapclient(data):
    fast = _parse_fetch_fast(data)
    assert fast is not None
    slow = parse_fetch_response(data, False, True)
    assert fast == dict(slow)
    for uid, msg in fast.items():
        if b"INTERNALDATE" in msg:
            assert msg[b"INTERNALDATE"].isoformat() == slow[uid][b"INTERNALDATE"].isoformat()


@pytest.mark.parametrize("data", [
    [b"1 (UID 4 MODSEQ (12345))"],                       # an item it does not know
    [b"1 (FLAGS (\\Seen))"],                             # no UID: imapclient's own rules apply
    [(b"1 (UID 4 BODY[HEADER] {3}", b"a\r\n"), b")"],   # another section
    [(b"1 (UID 4 BODY[] {3}", b"a\r\n"), b" UID 4)"],    # something after the literal
    [b'1 (UID 4 INTERNALDATE "31-Foo-2020 00:00:00 +0000")'],
], ids=["modseq", "no-uid", "header", "after-literal", "bad-date"])
def test_anything_unusual_goes_to_imapclient(data):
    assert _parse_fetch_fast(data) is None
    assert parse_fetch(data) == dict(parse_fetch_response(data, False, True))
