"""A stale X-UIDL is replaced, never stacked: what is removed is exactly reversible (issue #13, point 7)."""

import pytest

from mailshift.protocols.pop3 import restore_x_uidl_fields, strip_x_uidl_fields


@pytest.mark.parametrize("raw, kept, removed", [
    (b"From: a\r\nX-UIDL: old\r\n\r\nbody\r\n", b"From: a\r\n\r\nbody\r\n", [(9, b"X-UIDL: old\r\n")]),
    (b"X-UIDL: a\r\n b\r\nx-uidl:c\r\nS: 1\r\n\r\nb", b"S: 1\r\n\r\nb",
     [(0, b"X-UIDL: a\r\n b\r\n"), (15, b"x-uidl:c\r\n")]),
    (b"S: 1\r\n\r\nX-UIDL: in the body\r\n", b"S: 1\r\n\r\nX-UIDL: in the body\r\n", []),
    (b"S: 1\nX-UIDL: lf\n\nbody", b"S: 1\n\nbody", [(5, b"X-UIDL: lf\n")]),
    (b"S: 1\r\n\r\n", b"S: 1\r\n\r\n", []),
])
def test_strip_and_restore(raw, kept, removed):
    clean, got = strip_x_uidl_fields(raw)
    assert (clean, got) == (kept, removed)
    assert restore_x_uidl_fields(clean, got) == raw
