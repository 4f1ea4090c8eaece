"""Flag mapping and state codes (pure logic, no database)."""
import re
from pathlib import Path

import pytest

from mailshift.rules import states
from mailshift.rules.states import (
    MessageState,
    SysFlag,
    Transform,
    db_to_flags,
    flags_equal,
    flags_to_db,
    x_uidl_header,
)

MIGRATION = Path(states.__file__).parents[1] / "store" / "migrations" / "0001_init.sql"


def test_system_flags_to_bits():
    assert flags_to_db(("\\Seen",)) == (1, None)
    assert flags_to_db(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]) == (31, None)
    assert flags_to_db(()) == (0, None)
    assert flags_to_db(None) == (0, None)


def test_bytes_and_case_insensitive():
    # imaplib / imapclient give bytes; servers may vary the case
    assert flags_to_db((b"\\SEEN", b"\\flagged")) == (SysFlag.SEEN | SysFlag.FLAGGED, None)


def test_recent_dropped_keywords_kept_sorted_deduped():
    bits, kw = flags_to_db((b"\\Recent", b"$Forwarded", b"Junk", b"$forwarded", b"\\Seen", b""))
    assert bits == 1
    assert kw == ["$Forwarded", "Junk"]
    assert isinstance(kw, list)  # psycopg2 adapts list (not tuple) to text[]


def test_unknown_backslash_flag_is_kept_as_keyword():
    assert flags_to_db(["\\Important"]) == (0, ["\\Important"])


def test_round_trip():
    src = ("\\Answered", "\\Seen", "$MDNSent", "NonJunk")
    bits, kw = flags_to_db(src)
    back = db_to_flags(bits, kw)
    assert back == ("\\Seen", "\\Answered", "$MDNSent", "NonJunk")
    assert flags_to_db(back) == (bits, kw)
    assert flags_equal(src, back)
    assert not flags_equal(src, ("\\Seen",))


def test_db_to_flags_all_bits_and_range():
    assert db_to_flags(0) == ()
    assert db_to_flags(31) == ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
    assert db_to_flags(8, None) == ("\\Deleted",)
    with pytest.raises(ValueError):
        db_to_flags(32)
    with pytest.raises(ValueError):
        db_to_flags(-1)


def test_bad_type():
    with pytest.raises(TypeError):
        flags_to_db([1])


def test_x_uidl_header():
    assert x_uidl_header("00000001abc") == b"X-UIDL: 00000001abc\r\n"
    with pytest.raises(ValueError):
        x_uidl_header("a\r\nb")
    with pytest.raises(ValueError):
        x_uidl_header("")


def test_codes_match_contract_and_migration():
    assert [(s.name, int(s)) for s in MessageState] == [
        ("INTENT", 0), ("COPIED", 1), ("REFUSED", 2), ("FAILED", 3), ("SOURCE_EXPUNGED", 4), ("ALTERED", 5)]
    assert [int(t) for t in Transform] == [0, 1]
    assert [int(b) for b in SysFlag] == [1, 2, 4, 8, 16]
    sql = MIGRATION.read_text() + (MIGRATION.parent / "0008_copy_checks.sql").read_text()
    rows = dict((int(c), n) for c, n in re.findall(r"\((\d), '(\w+)',\s+(?:true|false)", sql))
    assert rows == {int(s): s.name.lower() for s in MessageState}
    assert "CHECK (state BETWEEN 0 AND 5)" in sql
    assert "CHECK (transform IN (0, 1))" in sql
    assert "CHECK (sys_flags BETWEEN 0 AND 31)" in sql
    assert states.SETTLED_STATES | states.BLOCKING_STATES == set(MessageState)


def test_the_ledger_state_names_are_not_shadowed():
    """Every module-level state name still means the ledger code the copier writes (a later
    constant of the same name once turned COPIED into the string "copied": every copy failed)."""
    from mailshift.rules import states as st

    for s in st.MessageState:
        assert getattr(st, s.name) is s, s.name
    assert st.Progress.COPIED == "copied" and st.COPIED == 1
