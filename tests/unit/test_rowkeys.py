"""rowkeys: occurrence numbers across batches, sorted merges and membership, in bounded memory."""

from __future__ import annotations

import itertools
from collections import Counter

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from sftp_connector import rowkeys


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=40), cuts=st.lists(st.integers(0, 40)))
def test_occurrence_numbers_count_each_value_across_batches(values: list[str], cuts: list[int]) -> None:
    bounds = sorted({0, len(values), *(c for c in cuts if c <= len(values))})
    seen, numbers, expected = rowkeys.Occurrences(), [], []
    running: Counter[str] = Counter()
    for start, end in itertools.pairwise(bounds):
        numbers += seen.number(pl.Series(values[start:end], dtype=pl.String)).to_list()
    for value in values:
        running[value] += 1
        expected.append(running[value])
    assert numbers == expected


@given(ordered=st.lists(st.integers(0, 50)), more=st.lists(st.integers(0, 50)), distinct=st.booleans())
def test_merge_sorted_is_a_sort_of_both(ordered: list[int], more: list[int], distinct: bool) -> None:
    merged = rowkeys.merge_sorted(pl.Series(sorted(ordered), dtype=pl.Int64), pl.Series(more, dtype=pl.Int64),
                                  distinct=distinct).to_list()
    both = sorted(ordered + more)
    assert merged == (sorted(set(both)) if distinct else both)


@given(hashes=st.lists(st.integers(0, 30)), known=st.sets(st.integers(0, 30)))
def test_among_is_membership(hashes: list[int], known: set[int]) -> None:
    found = rowkeys.among(pl.Series(hashes, dtype=pl.UInt32), pl.Series(sorted(known), dtype=pl.UInt32))
    assert found.to_list() == [h in known for h in hashes]
