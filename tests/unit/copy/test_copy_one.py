"""Copy options come from the building spec; explicit settings (CLI) win, unset ones do not."""

from __future__ import annotations

import pytest

from mailshift.copy.copier import CopyOptions, MailboxRef
from mailshift.copy.copy_one import MailboxContext, options_for


def _ctx(spec: dict) -> MailboxContext:
    return MailboxContext(MailboxRef(1, "a@example.jp", "a", "a@example.jp"), "B1", "src-a", "mailshift_src_a", spec)


def test_spec_sets_uidl_strategy_folder_map_and_lanes():
    opts = options_for(_ctx({"uidl_strategy": "x-uidl-header", "folder_map": {"Junk": "Spam"},
                             "dest_append_lanes": 1}), "delta")
    assert (opts.pass_kind, opts.uidl_strategy, opts.folder_map, opts.append_lanes) == \
        ("delta", "x-uidl-header", {"Junk": "Spam"}, 1)


def test_explicit_settings_win_and_none_means_unset():
    ctx = _ctx({"dest_append_lanes": 2})
    assert options_for(ctx, "prestage", append_lanes=5).append_lanes == 5
    assert options_for(ctx, "prestage", append_lanes=None, max_batches_in_flight=None).append_lanes == 2
    assert options_for(_ctx({}), "prestage").append_lanes == CopyOptions().append_lanes == 3


def test_nonsense_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        options_for(_ctx({"dest_append_lanes": 0}), "prestage", append_lanes=0)
    with pytest.raises(ValueError, match="pass kind"):
        options_for(_ctx({}), "sideways")
