"""What the destination stored vs what was appended: the classes of issue #13, point 4."""

import hashlib

import pytest

from mailshift.protocols.imap.append import classify_alteration

MSG = "From: a@example.net\r\nSubject: 日本語\r\n\r\nline one\r\nline two\r\n".encode()


@pytest.mark.parametrize("stored, cls", [
    (MSG.replace("日本語".encode(), b"XXXXXXXXX"), "header_bytes_replaced"),
    (MSG[:30], "truncated"),
    (MSG.replace(b"\r\n", b"\n"), "line_endings"),
    (MSG.replace(b"line one", b"line 1!!"), "other"),           # body bytes, 7-bit
    (MSG + b"extra\r\n", "other"),
])
def test_classes(stored, cls):
    got, evidence = classify_alteration(MSG, stored)
    assert got == cls
    assert f"stored {len(stored)} bytes sha256 {hashlib.sha256(stored).hexdigest()}, appended {len(MSG)} bytes" \
        in evidence


def test_evidence_points_at_the_first_difference():
    stored = MSG.replace("日本語".encode(), b"XXXXXXXXX")
    _, evidence = classify_alteration(MSG, stored)
    at = MSG.index("日".encode())
    assert f"first difference at byte {at}: appended {MSG[at:at + 16].hex()} stored {stored[at:at + 16].hex()}" in evidence
    assert evidence.endswith("; 9 byte(s) differ")
