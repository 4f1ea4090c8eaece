"""How a domain is cut into chunks for reading its proof facts: whole buildings, in order, every
building in exactly one half-open range (store.proofs.chunk_bounds)."""

from __future__ import annotations

import pytest

from mailshift.store.proofs import MailboxFacts, chunk_bounds


def _owner(bounds, building: str) -> list[int]:
    return [i for i, (lo, hi) in enumerate(bounds)
            if (lo is None or building >= lo) and (hi is None or building < hi)]


def test_a_small_scope_is_one_chunk():
    assert chunk_bounds([], 10) == [(None, None)]
    assert chunk_bounds([("B1", 3), ("B2", 4)], 10) == [(None, None)]


@pytest.mark.parametrize("size", [1, 5, 7, 100])
def test_every_building_is_in_exactly_one_chunk_and_chunks_hold_whole_buildings(size):
    counts = [(f"B{i:03d}", 1 + i % 7) for i in range(40)]
    bounds = chunk_bounds(counts, size)
    assert bounds[0][0] is None and bounds[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))     # contiguous, no gap, no overlap
    chunks: list[list[int]] = [[] for _ in bounds]
    for building, n in counts:
        (i,) = _owner(bounds, building)
        chunks[i].append(n)
    # a chunk closes once it holds `size` mailboxes: at least that many, and fewer without its last building
    assert all(sum(c) >= size and sum(c[:-1]) < size for c in chunks[:-1])
    assert chunks[-1] and sum(chunks[-1][:-1]) < size
    # a building added later (between two others, or after the last) falls in one chunk too
    assert len(_owner(bounds, "B0105")) == 1 and len(_owner(bounds, "C")) == 1 and len(_owner(bounds, "A")) == 1


def test_one_row_of_the_facts_query_is_the_positional_arguments_of_mailbox_facts():
    row = (7, "a@x.jp", "B1", "x.jp", 1, 2, "pre_cutover", "proven", None, None, 3, None, False,
           4, "delta", "finished", None, None, 10, 1000, True)
    f = MailboxFacts(*row)
    assert (f.mailbox_id, f.pass_id, f.pass_status, f.copied, f.bytes_copied, f.summary_fresh) == \
           (7, 4, "finished", 10, 1000, True)
    assert f.findings == [] and f.waivers == [] and f.findings is not MailboxFacts(*row).findings
