"""Folder collisions are refused before anything is written (issue #13, point 3)."""

import pytest

from mailshift.copy.copier import check_collisions
from mailshift.errors import FolderCollision
from mailshift.protocols.imap.folders import Namespace, plan_folder

SRC_B = Namespace("INBOX.", ".")
DEST = Namespace("", "/")


def plans(names, folder_map=None, special=None):
    return [plan_folder(n, SRC_B, DEST, (), special or {}, folder_map) for n in names]


def test_separator_rename_collision_is_refused():
    # "a/b" cannot be one component at a "/" destination: renamed to "a_b", which also exists
    with pytest.raises(FolderCollision, match=r"'INBOX\.a/b', 'INBOX\.a_b' -> 'a_b'.*folder_map"):
        check_collisions("x@y", plans(["INBOX", "INBOX.a/b", "INBOX.a_b"]), None)


def test_map_resolves_it():
    fm = {"a/b": "a-slash-b"}
    check_collisions("x@y", plans(["INBOX", "INBOX.a/b", "INBOX.a_b"], fm), fm)


def test_declared_merges_pass():
    fm = {"Old": "Keep", "Keep": "Keep"}
    check_collisions("x@y", plans(["INBOX.Old", "INBOX.Keep"], fm), fm)
    special = {"\\Sent": "Sent"}
    check_collisions("x@y", plans(["INBOX.Sent", "INBOX.Sent Items"], special=special), None)
