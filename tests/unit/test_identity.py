"""identity.resolve: identifiers are tried in order, the first match wins, as applying the rows one at a time
would (a property test against a model written here), on whole columns or row by row."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from sftp_connector import identity

PROPS = ("email", "crm_id", "phone")
VALUES = st.sampled_from(["", "a", "b", "c"])


def lookup_in(stored: dict[tuple[str, str], int]) -> identity.Lookup:
    def lookup(prop: str, values: pl.Series) -> pl.DataFrame:
        wanted = set(values.drop_nulls().to_list())
        found = sorted((value, pid) for (p, value), pid in stored.items() if p == prop and value in wanted)
        return pl.DataFrame(found, schema={"value": pl.String, "pid": pl.Int64}, orient="row")
    return lookup


def one_at_a_time(stored: dict[tuple[str, str], int], rows: list[tuple[str, ...]], props: tuple[str, ...],
                  allow_new: bool) -> tuple[list[int | None], set[tuple[int, str, str]]]:
    """The model: for each row in file order, the first of its identifier values (in the goal's order) that a
    stored profile holds, or that a profile created by an earlier row of the batch was created with, names
    its profile; else a new one is created (if allowed) with all the row's identifier values."""
    created: dict[tuple[str, str], int] = {}
    new: set[tuple[int, str, str]] = set()
    pids: list[int | None] = []
    count = 0
    for row in rows:
        pairs = [(prop, value) for prop, value in zip(props, row, strict=True) if value]
        pid = next((stored.get(pair, created.get(pair)) for pair in pairs if pair in stored or pair in created),
                   None)
        if pid is None and allow_new and pairs:
            count += 1
            pid = -count
            for pair in pairs:
                if pair not in created:
                    created[pair] = pid
                    new.add((pid, *pair))
        pids.append(pid)
    return pids, new


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 3), allow_new=st.booleans(), data=st.data())
def test_identifiers_are_tried_in_order_as_one_row_at_a_time(width: int, allow_new: bool, data: st.DataObject) -> None:
    props = PROPS[:width]
    rows = data.draw(st.lists(st.tuples(*[VALUES] * width), max_size=8))
    stored = data.draw(st.dictionaries(st.tuples(st.sampled_from(props), st.sampled_from(["a", "b", "c"])),
                                       st.integers(1, 3), max_size=4))
    frame = pl.DataFrame({f"f{i}": [row[i] for row in rows] for i in range(width)},
                         schema={f"f{i}": pl.String for i in range(width)})
    found = identity.resolve(lookup_in(stored), frame, [(f"f{i}", p) for i, p in enumerate(props)],
                             allow_new=allow_new)
    pids, new = one_at_a_time(stored, rows, props, allow_new)
    assert found.pids.to_list() == pids
    assert set(found.new_profiles.iter_rows()) == new


def test_the_first_identifier_wins_over_a_later_one() -> None:
    stored = {("email", "a"): 1, ("crm_id", "X"): 2}
    frame = pl.DataFrame({"e": ["a", "", "b"], "c": ["X", "X", ""]})
    found = identity.resolve(lookup_in(stored), frame, [("e", "email"), ("c", "crm_id")], allow_new=True)
    assert found.pids.to_list() == [1, 2, -1]
    assert found.new_profiles.rows() == [(-1, "email", "b")]


def test_without_allow_new_an_unknown_row_goes_nowhere() -> None:
    frame = pl.DataFrame({"e": ["a", ""]})
    found = identity.resolve(lookup_in({}), frame, [("e", "email")], allow_new=False)
    assert found.pids.to_list() == [None, None]
    assert found.new_profiles.is_empty()
