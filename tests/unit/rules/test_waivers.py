"""What lets a finding stand besides a waiver: an alteration class the building spec accepts
by name (issue #13, point 4). Every other class, and every class the copier did not record at
copy time, still blocks; an accepted one stays visible."""

from __future__ import annotations

import json

import pytest

from mailshift.inventory import spec
from mailshift.protocols.imap.append import classify_alteration
from mailshift.rules import states
from mailshift.rules.waivers import accept_alterations
from mailshift.verify.matching import Finding


def altered(cls, copy_class, **kw) -> Finding:
    return Finding("digest_mismatch", "INBOX", 1, 7, "INBOX", 70, 100, 100, detail="bytes differ",
                   alteration_class=cls, copy_class=copy_class, **kw)


def test_an_accepted_class_stops_blocking_and_is_counted():
    fs = [altered("header_bytes_replaced", "header_bytes_replaced"),
          altered("header_bytes_replaced", "header_bytes_replaced"),
          altered("line_endings", "line_endings"),
          Finding("missing_at_dest", "INBOX", 1, 8)]
    counts = accept_alterations(fs, ["header_bytes_replaced"], "B1")
    assert counts == {"header_bytes_replaced": 2}
    assert [f.blocking for f in fs] == [False, False, True, True]
    assert [f.accepted for f in fs] == [True, True, False, False]
    assert fs[0].detail == ("accepted alteration (header_bytes_replaced) by building B1's spec "
                            "accepted_alterations: bytes differ")
    assert fs[2].detail.endswith("; class line_endings is not in building B1's accepted_alterations "
                                 "(header_bytes_replaced)")


@pytest.mark.parametrize("copy_class, said", [(None, "no alteration"), ("other", "class other")])
def test_the_copier_must_have_recorded_the_same_class_at_copy_time(copy_class, said):
    f = altered("truncated", copy_class)
    assert accept_alterations([f], ["truncated"], "B2") == {}
    assert f.blocking and not f.accepted
    assert f.detail.endswith(f"class truncated is accepted by building B2's spec, but the copier recorded {said} "
                             "for this message at copy time: not accepted")


def test_without_accepted_classes_nothing_changes():
    f = altered("other", "other")
    for accepted in (None, []):
        assert accept_alterations([f], accepted, "B3") == {}
        assert f.blocking and f.detail == "bytes differ"
    unclassified = altered(None, None)
    assert accept_alterations([unclassified], ["other"], "B3") == {} and unclassified.blocking


def test_one_vocabulary_of_classes():
    """The schema's enum, the rule's vocabulary and the copier's classifier name the same classes."""
    schema = json.loads(spec.SCHEMA_PATH.read_text())
    assert tuple(schema["properties"]["accepted_alterations"]["items"]["enum"]) == states.ALTERATION_CLASSES
    assert spec.ALTERATION_CLASSES == states.ALTERATION_CLASSES
    msg = "Subject: 日本\r\n\r\nbody\r\n".encode()
    made = {classify_alteration(msg, stored)[0] for stored in (
        msg.replace("日本".encode(), b"XXXXXX"), msg[:5], msg.replace(b"\r\n", b"\n"), b"different")}
    assert made == set(states.ALTERATION_CLASSES)
    assert states.altered_class("truncated: stored 5 bytes") == "truncated"
    assert states.altered_class("weird: x") is None and states.altered_class(None) is None
    assert spec.resolve(None)["accepted_alterations"] == []
    assert spec.validate_partial({"accepted_alterations": ["line_endings", "line_endings"]}, "f.yaml", None)
