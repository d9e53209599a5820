"""The pure parts of the merge package on hand-made frames alone: exactly-once memory (`memory`), the rules over
frames (`apply.applied`) and a batch's plan (`plan.plan_batch`). No store, no files.

Each test builds a Context and a FileMerge from a real goal model, with `columns` naming every property's
profile column `col_<property>`. Property values are JSON array text, null when empty (`rules.encode`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import polars as pl
import pytest

from sftp_connector import merge
from sftp_connector.config import models
from sftp_connector.errors import RowReject
from sftp_connector.merge import apply, memory, plan
from sftp_connector.merge.context import field_col, prop_col
from sftp_connector.rowkeys import HASH_SEED

Cells = dict[str, str | None]
NOW = 1000.0
RECORD = {"property": pl.String, "value": pl.String, "profile_id": pl.Int64}


def goal(
    mappings: list[tuple[str, str, str]], *, identifiers: tuple[tuple[str, str], ...] = (("email", "email"),),
    **extra: Any,
) -> models.ImportProfiles:
    """Given (field, property, rule) mappings and (field, property) identifiers, return an import-profiles goal."""
    return models.ImportProfiles.model_validate({
        "kind": "import-profiles", "name": "g", "files": [{"name": "f", "pattern": "*.csv"}],
        "identifiers": [{"field": f, "property": p} for f, p in identifiers],
        "mappings": [{"field": f, "property": p, "rule": r} for f, p, r in mappings], **extra})


def file_merge(
    the_goal: models.ImportProfiles, *, objectives: tuple[str, ...] = (), previous: pl.DataFrame | None = None,
) -> merge.FileMerge:
    """Given a goal, return the state of merging its file `daily.csv`; consent is held in `consent`."""
    fields = [i.field for i in the_goal.identifiers] + [m.field for m in the_goal.mappings] \
        + [g.field for g in the_goal.groups]
    settings = merge.context(the_goal, label="daily.csv", digest="d1",
                             indexed=frozenset(i.property for i in the_goal.identifiers),
                             privacy=models.Privacy(objectives=list(objectives), consent_property="consent"))
    state = merge.FileMerge(settings=settings, maps=merge.mappings(the_goal, list(dict.fromkeys(fields))), file_id=1,
                            previous=previous, columns={}, now=NOW)
    state.columns = {p: f"col_{p}" for p in state.props}
    return state


def batch(fields: list[str], cells: list[Cells], first: int = 2) -> pl.DataFrame:
    """Given field names and rows of cells, return a batch as the CSV reader hands it on (String columns, _row
    numbered from `first`; a missing cell is null)."""
    columns = {f: [row.get(f) for row in cells] for f in fields}
    return pl.DataFrame(columns, schema=dict.fromkeys(fields, pl.String)) \
        .with_columns(_row=pl.int_range(first, first + len(cells), dtype=pl.Int64))


def rows(state: merge.FileMerge, cells: list[Cells], pids: list[int],
         prev_sums: list[str | None] | None = None) -> pl.DataFrame:
    """Given rows of cells and each row's profile, return them as memory and the read hand them to the rules:
    _row (from 2), each used field's column, _key `k<row>`, _hash `100 + row`, _prev_hash, _prev_sums, _pid."""
    fields = list(dict.fromkeys([f for f, _ in state.identifiers] + [m.field for m in state.maps]
                                + [g.field for g in state.settings.groups]))
    numbers = list(range(2, len(cells) + 2))
    return pl.DataFrame({
        "_row": numbers, **{field_col(f): [row.get(f) for row in cells] for f in fields},
        "_hash": [100 + n for n in numbers], "_key": [f"k{n}" for n in numbers], "_prev_hash": [None] * len(cells),
        "_prev_sums": prev_sums or [None] * len(cells), "_pid": pids,
    }, schema={"_row": pl.Int64, **{field_col(f): pl.String for f in fields}, "_hash": pl.Int64, "_key": pl.String,
               "_prev_hash": pl.Int64, "_prev_sums": pl.String, "_pid": pl.Int64})


def held(
    state: merge.FileMerge, profiles: dict[int, dict[str, list[Any] | None]], name: Callable[[str], str] = prop_col,
) -> pl.DataFrame:
    """Given each profile's values by property, return pid and every property of the state as JSON array text
    (null when empty), in columns named by `name` (prop_col: what the rules read; str: what the store read)."""
    def text(values: list[Any] | None) -> str | None:
        return orjson.dumps(values).decode() if values else None

    return pl.DataFrame({"pid": list(profiles), **{
        name(p): [text(props.get(p)) for props in profiles.values()] for p in state.props
    }}, schema={"pid": pl.Int64, **{name(p): pl.String for p in state.props}})


def texts(after: pl.DataFrame, prop: str) -> dict[int, str | None]:
    """Given the profiles after a batch, return each one's JSON array text of a property."""
    return dict(zip(after.get_column("pid").to_list(), after.get_column(prop_col(prop)).to_list(), strict=True))


# ── memory: keys, hashes and what the earlier import remembered ──────────────────────


def test_keyed_keys_rows_by_first_identifier_and_occurrence_and_rejects_rows_without_one() -> None:
    state = file_merge(goal([("name", "name", "set")], identifiers=(("email", "email"), ("crm", "crm_id")),
                            groups=[{"type": "shop", "field": "shop"}]))
    fields = ["email", "crm", "name", "shop", "extra"]
    first = memory.keyed(batch(fields, [
        {"email": "a@x", "name": "A"}, {"name": "nobody"}, {"email": "a@x", "crm": "9"}, {"email": "", "crm": "7"},
    ]), state)
    second = memory.keyed(batch(fields, [{"email": "a@x"}, {"crm": ""}], first=6), state)
    assert first.columns == ["_row", *map(field_col, ["email", "crm", "name", "shop"]), "_hash", "_key"]
    assert first.get_column("_key").to_list() == ["0\x1fa@x\x1f1", "0\x1fa@x\x1f2", "1\x1f7\x1f1"]
    assert first.get_column("_row").to_list() == [2, 4, 5]
    assert second.get_column("_key").to_list() == ["0\x1fa@x\x1f3"]  # occurrences count across batches
    reason = "no usable identifier: email, crm all empty"
    assert state.rejects == [RowReject("daily.csv", 3, None, reason), RowReject("daily.csv", 7, None, reason)]
    assert state.counts.rows_rejected == 2


def test_a_row_hash_covers_the_used_fields_and_the_configuration_only() -> None:
    fields = ["email", "name", "extra"]
    cells = [{"email": "a@x", "name": "A", "extra": "1"}, {"email": "a@x", "name": "A", "extra": "2"},
             {"email": "a@x", "name": "B"}]
    hashes = memory.keyed(batch(fields, cells), file_merge(goal([("name", "name", "set")]))).get_column("_hash")
    state = file_merge(goal([("name", "name", "set")]))
    other = merge.FileMerge(settings=merge.context(state.settings.goal, label="daily.csv", digest="d2",
                                              indexed=frozenset({"email"}), privacy=models.Privacy()),
                            maps=state.maps, file_id=1, previous=None, columns=state.columns, now=NOW)
    rehashed = memory.keyed(batch(fields, cells), other).get_column("_hash")
    assert hashes.dtype == pl.Int64
    assert [hashes[0] == hashes[1], hashes[0] == hashes[2], hashes[0] == rehashed[0]] == [True, False, False]


def remembered(rows: list[tuple[str, int, int, str | None]]) -> pl.DataFrame:
    """Given (key, hash, profile_id, sums) rows in the order they were applied, return them as `start` keeps
    them: the latest of each key, sorted by key hash."""
    frame = pl.DataFrame(rows, schema={"key": pl.String, "hash": pl.Int64, "profile_id": pl.Int64,
                                       "sums": pl.String}, orient="row")
    return memory.latest_by_hash(frame.with_columns(_h=pl.col("key").hash(seed=HASH_SEED)))


@pytest.mark.parametrize(("write_mode", "present"), [("append", []), ("overwrite", [[41]])])
def test_fresh_drops_rows_remembered_in_this_form_and_keeps_changed_ones_with_their_sums(
    write_mode: str, present: list[list[int]],
) -> None:
    the_goal = goal([("n", "total", "sum")], write_mode=write_mode)
    fields = ["email", "n"]
    cells = [{"email": "a@x", "n": "1"}, {"email": "b@x", "n": "2"}, {"email": "c@x", "n": "3"}]
    hashes = memory.keyed(batch(fields, cells), file_merge(the_goal)).get_column("_hash").to_list()
    state = file_merge(the_goal, previous=remembered([
        ("0\x1fa@x\x1f1", hashes[0] + 1, 40, '{"total":9.0}'),  # an older form of the unchanged row
        ("0\x1fa@x\x1f1", hashes[0], 41, '{"total":1.0}'),
        ("0\x1fb@x\x1f1", hashes[1] + 1, 42, '{"total":4.0}'),
    ]))
    got = memory.fresh(memory.keyed(batch(fields, cells), state), state)
    assert got.select("_row", "_prev_hash", "_prev_sums").rows() == [(3, hashes[1] + 1, '{"total":4.0}'),
                                                                      (4, None, None)]
    assert "_prev_pid" not in got.columns
    assert state.counts.rows_unchanged == 1
    assert [s.to_list() for s in state.present] == present


def test_without_an_earlier_import_every_row_is_fresh() -> None:
    state = file_merge(goal([("name", "name", "set")]))
    got = memory.fresh(memory.keyed(batch(["email", "name"], [{"email": "a@x"}, {"email": "a@x"}]), state), state)
    assert got.select("_key", "_prev_hash", "_prev_sums").rows() == [
        ("0\x1fa@x\x1f1", None, None), ("0\x1fa@x\x1f2", None, None)]
    assert state.counts.rows_unchanged == 0


# ── apply: the rules over frames ─────────────────────────────────────────────────────

# rule, profile 7's values before, its three cells in file order, its value after (row by row, as rules.py reads)
SEVERAL = [
    ("set", ["old"], ["a", None, "b|c"], '["b","c"]'),
    ("set", ["old"], ["a|b", "", None], '["a","b"]'),
    ("set", None, [None, None, None], None),
    ("set_or_clear", ["old"], ["a", "b", None], None),
    ("set_or_clear", ["old"], ["a", None, "b"], '["b"]'),
    ("set_if_empty", None, [None, "a", "b"], '["a"]'),
    ("set_if_empty", ["old"], ["a", "b", None], '["old"]'),
    ("add", ["x"], ["a|x", "b", "a|c"], '["x","a","b","c"]'),
    ("add", None, [None, "b|a", "a"], '["b","a"]'),
    ("sum", [10], ["1", "2.5", None], "[13.5]"),
    ("sum", None, ["-1", "3", "1"], "[3]"),
    ("sum", [2], [None, None, None], "[2]"),
]


@pytest.mark.parametrize(("rule", "before", "cells", "expected"), SEVERAL)
def test_a_profiles_rows_apply_as_one_after_the_other(
    rule: str, before: list[Any] | None, cells: list[str | None], expected: str | None,
) -> None:
    state = file_merge(goal([("v", "p", rule)]))
    one, one_after = ("5", "[5]") if rule == "sum" else ("s", '["s"]')
    batch_rows = rows(state, [{"email": "a", "v": cells[0]}, {"email": "b", "v": one}, {"email": "a", "v": cells[1]},
                              {"email": "a", "v": cells[2]}], [7, 8, 7, 7])
    after, applied = apply.applied(batch_rows, held(state, {7: {"p": before, "email": ["a"]}, 8: {"email": ["b"]}}),
                                   state)
    assert texts(after, "p") == {7: expected, 8: one_after}
    assert texts(after, "email") == {7: '["a"]', 8: '["b"]'}
    assert applied.select("_row", "_pid").rows() == [(2, 7), (3, 8), (4, 7), (5, 7)]
    assert state.counts.rows_applied == 4


# rule, then for profiles 7, 8, 9 with one row each: (values before, cell, value after)
ONCE = [
    ("set", [(["old"], None, '["old"]'), (["old"], "a|b", '["a","b"]'), (None, "", None)]),
    ("set_or_clear", [(["old"], None, None), (["old"], "a", '["a"]'), (None, "b|c", '["b","c"]')]),
    ("set_if_empty", [(["old"], "a", '["old"]'), (None, "a|b", '["a","b"]'), (None, None, None)]),
    ("add", [(["x"], "y|x", '["x","y"]'), (["x"], None, '["x"]'), (None, "b|a", '["b","a"]')]),
    ("sum", [([10], "2.5", "[12.5]"), ([10], None, "[10]"), (None, "-3", "[-3]")]),
]


@pytest.mark.parametrize(("rule", "profiles"), ONCE)
def test_profiles_with_one_row_each_get_the_rule_applied_once(
    rule: str, profiles: list[tuple[list[Any] | None, str | None, str | None]],
) -> None:
    state = file_merge(goal([("v", "p", rule)]))
    pids = [7, 8, 9]
    before = held(state, {pid: {"p": was} for pid, (was, _, _) in zip(pids, profiles, strict=True)})
    after, _ = apply.applied(rows(state, [{"email": "e", "v": cell} for _, cell, _ in profiles], pids), before, state)
    assert texts(after, "p") == {pid: expected for pid, (_, _, expected) in zip(pids, profiles, strict=True)}


def test_mappings_of_one_property_apply_in_mapping_order_within_each_row() -> None:
    state = file_merge(goal([("a", "p", "set"), ("b", "p", "add"), ("c", "q", "set_if_empty")]))
    cells = [{"a": "x", "b": "y", "c": "1"}, {"a": "q", "b": "r"}, {"b": "z", "c": "2"}, {"a": "w"},
             {"b": "v", "c": "3"}]
    batch_rows = rows(state, cells, [7, 8, 7, 7, 7])
    after, _ = apply.applied(batch_rows, held(state, {7: {"p": ["old"]}, 8: {"q": ["kept"]}}), state)
    assert texts(after, "p") == {7: '["w","v"]', 8: '["q","r"]'}
    assert texts(after, "q") == {7: '["1"]', 8: '["kept"]'}


@pytest.mark.parametrize(("options", "expected"), [
    ({"multi_value_separator": ";"}, '["a","b","c|d"]'),
    ({"multi_value_separator": None}, '["a;;b;","c|d"]'),
    ({}, '["a;;b;","c","d"]'),
])
def test_cells_split_on_the_goals_multi_value_separator(options: dict[str, Any], expected: str) -> None:
    state = file_merge(goal([("v", "p", "add")], csv=options))
    batch_rows = rows(state, [{"email": "a", "v": "a;;b;"}, {"email": "a", "v": "c|d"}], [7, 7])
    after, _ = apply.applied(batch_rows, held(state, {7: {}}), state)
    assert texts(after, "p") == {7: expected}


def test_sum_adds_the_difference_from_what_a_re_imported_row_contributed_before() -> None:
    state = file_merge(goal([("n", "total", "sum")]))
    cells = [{"email": "a", "n": "6"}, {"email": "b", "n": "2"}, {"email": "a", "n": "1"}, {"email": "a"},
             {"email": "b", "n": "5"}]
    prev = ['{"total":4.0}', None, None, '{"total":3.0}', '{"total":5.0}']
    after, applied = apply.applied(rows(state, cells, [7, 8, 7, 7, 8], prev),
                                   held(state, {7: {"total": [10]}, 8: {"total": [1]}}), state)
    assert texts(after, "total") == {7: "[13]", 8: "[3]"}  # 10 + (6 - 4) + 1; 1 + 2 + (5 - 5)
    assert applied.select("_row", "_sums").rows() == [
        (2, '{"total":6.0}'), (3, '{"total":2.0}'), (4, '{"total":1.0}'), (5, '{"total":3.0}'), (6, '{"total":5.0}')]


def test_a_sum_cell_that_is_not_a_number_is_rejected_with_its_row_and_adds_nothing() -> None:
    state = file_merge(goal([("n", "total", "sum"), ("name", "name", "set")]))
    cells = [{"email": "a", "n": "1"}, {"email": "b", "n": "x", "name": "B"}, {"email": "a", "n": " 2 "},
             {"email": "a", "n": "inf"}]
    after, applied = apply.applied(rows(state, cells, [7, 8, 7, 7]), held(state, {7: {}, 8: {"total": [4]}}), state)
    assert texts(after, "total") == {7: "[3]", 8: "[4]"}
    assert texts(after, "name") == {7: None, 8: '["B"]'}
    assert state.rejects == [RowReject("daily.csv", 3, "n", "`n` is not a number", "x"),
                             RowReject("daily.csv", 5, "n", "`n` is not a number", "inf")]
    assert state.counts.cells_rejected == 2
    assert applied.get_column("_row").to_list() == [2, 3, 4, 5]


def test_the_applied_frame_keeps_file_order_and_has_no_sums_without_a_sum_rule() -> None:
    state = file_merge(goal([("name", "name", "set")]))
    cells = [{"email": e, "name": e.upper()} for e in ["c", "a", "b", "a", "c", "d"]]
    after, applied = apply.applied(rows(state, cells, [9, 7, 8, 7, 9, 10]),
                                   held(state, {7: {}, 8: {}, 9: {}, 10: {}}), state)
    assert applied.select("_row", "_pid", "_key", "_hash", "_sums").rows() == [
        (2, 9, "k2", 102, None), (3, 7, "k3", 103, None), (4, 8, "k4", 104, None), (5, 7, "k5", 105, None),
        (6, 9, "k6", 106, None), (7, 10, "k7", 107, None)]
    assert texts(after, "name") == {7: '["A"]', 8: '["B"]', 9: '["C"]', 10: '["D"]'}


# consent rule, profile 7's consent before, (consent cell, tag) rows in file order: the rows that apply and after
CONSENT = [
    ("set", ["news"], [("other", "t1"), (None, "t2"), ("news", "t3")], [3, 4], '["news"]', '["t2","t3"]'),
    ("set", None, [(None, "t1"), ("news", "t2"), (None, "t3"), ("x", "t4")], [3, 4], '["news"]', '["t2","t3"]'),
    ("set_or_clear", None, [("news", "t1"), (None, "t2"), ("news", "t3")], [2, 4], '["news"]', '["t1","t3"]'),
    ("set_if_empty", None, [("other", "t1"), ("news", "t2"), ("x", "t3")], [3, 4], '["news"]', '["t2","t3"]'),
    ("set_if_empty", ["other"], [("news", "t1")], [], '["other"]', None),
    ("add", None, [(None, "t1"), ("news", "t2"), (None, "t3")], [3, 4], '["news"]', '["t2","t3"]'),
    ("add", ["other"], [("x", "t1"), ("news", "t2"), ("y", "t3")], [3, 4], '["other","news","y"]', '["t2","t3"]'),
]


@pytest.mark.parametrize(("rule", "before", "cells", "applies", "consent", "tags"), CONSENT)
def test_a_row_failing_consent_changes_nothing_and_later_rows_see_the_profile_without_it(
    rule: str, before: list[str] | None, cells: list[tuple[str | None, str]], applies: list[int],
    consent: str | None, tags: str | None,
) -> None:
    state = file_merge(goal([("c", "consent", rule), ("t", "tags", "add")]), objectives=("news",))
    batch_rows = rows(state, [{"email": "a", "c": c, "t": t} for c, t in cells], [7] * len(cells))
    after, applied = apply.applied(batch_rows, held(state, {7: {"consent": before}}), state)
    assert applied.get_column("_row").to_list() == applies
    assert (texts(after, "consent"), texts(after, "tags")) == ({7: consent}, {7: tags})
    assert state.counts.no_consent == len(cells) - len(applies)
    assert state.counts.rows_applied == len(applies)


def test_consent_held_before_the_batch_decides_when_no_mapping_writes_it() -> None:
    state = file_merge(goal([("name", "name", "set")]), objectives=("news", "ads"))
    cells = [{"email": "a", "name": "A"}, {"email": "b", "name": "B"}, {"email": "c", "name": "C"}]
    profiles = {7: {"consent": ["ads"]}, 8: {"consent": ["other"]}, 9: {}}
    after, applied = apply.applied(rows(state, cells, [7, 8, 9]), held(state, profiles), state)
    assert applied.get_column("_pid").to_list() == [7]
    assert texts(after, "name") == {7: '["A"]', 8: None, 9: None}
    assert state.counts.no_consent == 2


def test_consent_written_by_two_mappings_is_checked_row_by_row() -> None:
    state = file_merge(goal([("c", "consent", "set"), ("d", "consent", "add"), ("t", "tags", "add")]),
                       objectives=("news",))
    cells = [{"email": "a", "c": "other", "t": "t1"}, {"email": "a", "d": "news", "t": "t2"},
             {"email": "a", "c": "x", "t": "t3"}, {"email": "a", "d": "y", "t": "t4"}]
    after, applied = apply.applied(rows(state, cells, [7, 7, 7, 7]), held(state, {7: {}}), state)
    assert applied.get_column("_row").to_list() == [3, 5]
    assert (texts(after, "consent"), texts(after, "tags")) == ({7: '["news","y"]'}, {7: '["t2","t4"]'})
    assert state.counts.no_consent == 2


# ── plan: what a batch writes ────────────────────────────────────────────────────────


def new_profiles(found: list[tuple[int, str, str]]) -> pl.DataFrame:
    """Given (pid, property, value) for new profiles, return them as the identity resolution does."""
    return pl.DataFrame(found, schema={"pid": pl.Int64, "property": pl.String, "value": pl.String}, orient="row")


def index(entries: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(entries, schema=RECORD, orient="row")


def test_plan_creates_new_profiles_in_order_and_patches_only_changed_columns_of_changed_stored_ones() -> None:
    state = file_merge(goal([("name", "name", "set"), ("tags", "tags", "add")]))
    stored = {5: {"email": ["s5"], "name": ["Ann"], "tags": ["t"]}, 6: {"email": ["s6"], "name": ["Bob"]},
              7: {"email": ["s7"], "name": ["Cy"], "tags": ["u"]}, 8: {"email": ["s8"], "name": ["Di"]}}
    cells = [{"email": "n1", "name": "Neu", "tags": "a"}, {"email": "s5", "name": "Ann", "tags": "t"},
             {"email": "s6", "name": "Robert"}, {"email": "n2", "name": "Zed"}, {"email": "s7", "tags": "v|u"},
             {"email": "s8", "name": "Diana"}, {"email": "n1", "tags": "b"}]
    read = plan.Read(rows(state, cells, [-1, 5, 6, -2, 7, 8, -1]), held(state, stored, str),
                     new_profiles([(-1, "email", "n1"), (-2, "email", "n2")]), 0)
    got = plan.plan_batch(read, state)
    assert got.new.columns == ["pid", "created_at", "updated_at", "col_name", "col_tags", "col_email"]
    assert got.new.rows() == [(-1, NOW, NOW, '["Neu"]', '["a","b"]', '["n1"]'),
                              (-2, NOW, NOW, '["Zed"]', None, '["n2"]')]
    assert [(p.columns, p.sort("pid").rows()) for p in got.patches] == [
        (["pid", "col_name"], [(6, '["Robert"]'), (8, '["Diana"]')]), (["pid", "col_tags"], [(7, '["u","v"]')])]
    assert sorted(got.changed.to_list()) == [6, 7, 8]
    assert state.changed.to_list() == [6, 7, 8]
    assert got.records.rows() == [("k2", 102, -1, None), ("k3", 103, 5, None), ("k4", 104, 6, None),
                                  ("k5", 105, -2, None), ("k6", 106, 7, None), ("k7", 107, 8, None),
                                  ("k8", 108, -1, None)]
    assert got.fresh.rows() == [("email", "n1", -1), ("email", "n2", -2)]
    assert [got.releases.height, got.claims.height, got.added.height] == [0, 0, 0]
    assert got.pairs.rows() == [("email", "n1"), ("email", "n2")]


def test_plan_of_rows_that_change_nothing_writes_no_profile() -> None:
    state = file_merge(goal([("name", "name", "set"), ("tags", "tags", "set_if_empty")]))
    stored = {5: {"email": ["s5"], "name": ["Ann"], "tags": ["t"]}}
    cells = [{"email": "s5", "name": "Ann"}, {"email": "s5", "tags": "other"}, {"email": "s5"}]
    got = plan.plan_batch(plan.Read(rows(state, cells, [5, 5, 5]), held(state, stored, str), new_profiles([]), 0),
                          state)
    assert [got.new.height, got.patches, got.changed.to_list(), got.pairs.height] == [0, [], [], 0]
    assert got.records.get_column("pid").to_list() == [5, 5, 5]


def test_plan_releases_and_claims_changed_identifier_values_and_indexes_new_profiles_values() -> None:
    state = file_merge(goal([("alt", "email", "set"), ("alias", "email", "add"), ("name", "name", "set")]))
    stored = {5: {"email": ["s@x"]}, 6: {"email": ["u@x"]}, 7: {"email": ["v@x", "w@x"]}}
    cells = [{"email": "s@x", "alt": "t@x"}, {"email": "n@x", "alias": "n2@x|n@x"}, {"email": "u@x", "name": "N"},
             {"email": "m@x"}, {"email": "v@x", "alias": "a@x", "alt": "v@x|b@x"}]
    read = plan.Read(rows(state, cells, [5, -1, 6, -2, 7]), held(state, stored, str),
                     new_profiles([(-1, "email", "n@x"), (-2, "email", "m@x")]), 0)
    got = plan.plan_batch(read, state)
    assert got.releases.rows() == [("email", "s@x", 5), ("email", "w@x", 7)]
    assert got.claims.rows() == [("email", "a@x", 7), ("email", "b@x", 7), ("email", "t@x", 5)]
    assert got.fresh.rows() == [("email", "m@x", -2), ("email", "n@x", -1)]
    assert got.added.rows() == [("email", "n2@x", -1)]
    assert got.new.select("pid", "col_email").rows() == [(-1, '["n@x","n2@x"]'), (-2, '["m@x"]')]
    assert got.pairs.rows() == [("email", "s@x"), ("email", "w@x"), ("email", "a@x"), ("email", "b@x"),
                                ("email", "t@x"), ("email", "m@x"), ("email", "n@x"), ("email", "n2@x")]
    assert sorted(got.changed.to_list()) == [5, 6, 7]


def test_a_value_a_stored_profile_claims_in_the_batch_is_not_fresh_for_a_new_one() -> None:
    state = file_merge(goal([("alt", "email", "set")]))
    read = plan.Read(rows(state, [{"email": "n@x"}, {"email": "s@x", "alt": "n@x"}], [-1, 5]),
                     held(state, {5: {"email": ["s@x"]}}, str), new_profiles([(-1, "email", "n@x")]), 0)
    got = plan.plan_batch(read, state)
    assert got.claims.rows() == [("email", "n@x", 5)]
    assert got.fresh.rows() == []
    assert got.fresh.schema == pl.Schema(RECORD)


def test_a_new_profile_whose_rows_all_lack_consent_is_not_created_and_numbering_stays_dense() -> None:
    state = file_merge(goal([("c", "consent", "set"), ("name", "name", "set"), ("n", "total", "sum")]),
                       objectives=("news",))
    cells = [{"email": "a@x", "name": "A", "n": "1"}, {"email": "b@x", "c": "news", "name": "B", "n": "2"},
             {"email": "s@x", "name": "S"}, {"email": "a@x", "c": "other"}, {"email": "d@x", "c": "news", "n": "4"},
             {"email": "b@x", "n": "3"}]
    read = plan.Read(rows(state, cells, [-1, -2, 5, -1, -3, -2]), held(state, {5: {"email": ["s@x"]}}, str),
                     new_profiles([(-1, "email", "a@x"), (-2, "email", "b@x"), (-3, "email", "d@x")]), 0)
    got = plan.plan_batch(read, state)
    assert got.new.select("pid", "col_email", "col_consent", "col_name", "col_total").rows() == [
        (-1, '["b@x"]', '["news"]', '["B"]', "[5]"), (-2, '["d@x"]', '["news"]', None, "[4]")]
    assert got.records.rows() == [("k3", 103, -1, '{"total":2.0}'), ("k6", 106, -2, '{"total":4.0}'),
                                  ("k7", 107, -1, '{"total":3.0}')]
    assert got.fresh.rows() == [("email", "b@x", -1), ("email", "d@x", -2)]
    assert [got.patches, got.changed.to_list(), state.counts.no_consent] == [[], [], 3]


def test_links_carry_each_applied_rows_group_fields_in_file_order() -> None:
    state = file_merge(goal([("name", "name", "set")], groups=[{"type": "shop", "field": "shop"}]))
    cells = [{"email": "a", "shop": "S1"}, {"email": "b"}, {"email": "a", "shop": "S2|S3"}]
    read = plan.Read(rows(state, cells, [-1, 5, -1]), held(state, {5: {"email": ["b"]}}, str),
                     new_profiles([(-1, "email", "a")]), 0)
    got = plan.plan_batch(read, state)
    assert got.links.rows() == [(-1, "S1"), (5, None), (-1, "S2|S3")]
    assert got.links.columns == ["_pid", field_col("shop")]
