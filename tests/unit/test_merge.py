"""Pure parts of the merge stage: mapping expansion, computation layers, occurrence numbers."""

from __future__ import annotations

import polars as pl
import pytest

from sftp_connector import merge
from sftp_connector.config import models
from sftp_connector.errors import InputError
from sftp_connector.merge import apply, memory, plan
from sftp_connector.rowkeys import HASH_SEED, Occurrences
from sftp_connector.store import writes

M = merge.ColumnRule


def test_layers_keep_mappings_of_one_property_in_order() -> None:
    maps = [M("a", "x", "set"), M("b", "y", "add"), M("c", "x", "add"), M("e", "z", "set")]
    assert apply.layers(maps) == [[maps[0], maps[1]], [maps[2], maps[3]]]


def goal(**extra: object) -> models.ImportProfiles:
    return models.ImportProfiles.model_validate({
        "kind": "import-profiles", "name": "g", "files": [{"name": "f", "pattern": "*.csv"}],
        "identifiers": [{"field": "email", "property": "email"}],
        "mappings": [{"field": "name", "property": "first_name"}], **extra})


def test_bulk_mapping_maps_every_other_column_with_the_prefix() -> None:
    got = merge.mappings(goal(prefix="crm_", bulk_mapping={"rule": "add"}), ["email", "name", "city", "_row"])
    assert got == [M("name", "crm_first_name", "set"), M("city", "crm_city", "add")]


def test_a_missing_field_is_named() -> None:
    with pytest.raises(InputError, match=r"field\(s\) name not in the file \(columns: email, city\)"):
        merge.mappings(goal(), ["email", "city", "_row"])


def test_occurrences_count_across_batches() -> None:
    seen = Occurrences()
    first = seen.number(pl.Series(["a", "b", "a"]))
    second = seen.number(pl.Series(["b", "c", "a", "a"]))
    assert first.to_list() == [1, 1, 2]
    assert second.to_list() == [2, 1, 3, 4]


def remembered(keys: list[str], hashes: list[int] | None = None) -> pl.DataFrame:
    frame = pl.DataFrame({"key": keys, "hash": [10 * (i + 1) for i in range(len(keys))],
                          "profile_id": [i + 1 for i in range(len(keys))], "sums": [None] * len(keys)},
                         schema_overrides={"sums": pl.String})
    true = frame.get_column("key").hash(seed=HASH_SEED)
    return frame.with_columns(_h=pl.Series(hashes, dtype=pl.UInt64) if hashes else true)


def test_remembered_rows_are_found_by_key_and_new_keys_get_nulls() -> None:
    previous = remembered(["0\x1fa\x1f1", "0\x1fb\x1f1", "0\x1fc\x1f1"]).sort("_h")
    got = memory.remembered(pl.Series(["0\x1fc\x1f1", "0\x1fz\x1f1", "0\x1fa\x1f1"]), previous)
    assert got.get_column("_prev_pid").to_list() == [3, None, 1]
    assert got.get_column("_prev_hash").to_list() == [30, None, 10]
    empty = memory.remembered(pl.Series(["0\x1fa\x1f1"]), previous.clear())
    assert empty.get_column("_prev_pid").to_list() == [None]


def test_two_remembered_keys_sharing_a_hash_fall_back_to_an_exact_join() -> None:
    real = pl.Series(["a"]).hash(seed=HASH_SEED).item()
    previous = remembered(["x", "a"], [real, real])  # as if "x" hashed like "a": the search lands on "x"
    got = memory.remembered(pl.Series(["a", "x"]), previous)
    assert got.get_column("_prev_pid").to_list() == [2, 1]


def test_the_latest_remembered_row_of_a_key_wins_and_rows_come_sorted_by_key_hash() -> None:
    applied = remembered(["a", "b", "c", "b", "a"])
    got = memory.latest_by_hash(applied)
    assert sorted(zip(got["key"], got["hash"], strict=True)) == [("a", 50), ("b", 40), ("c", 30)]
    assert got["_h"].is_sorted()


def test_keys_sharing_a_hash_are_told_apart_when_the_latest_rows_are_kept() -> None:
    got = memory.latest_by_hash(remembered(["x", "a", "x"], [7, 7, 7]))  # as if every key hashed alike
    assert sorted(zip(got["key"], got["hash"], strict=True)) == [("a", 20), ("x", 30)]


def test_new_profiles_are_numbered_in_storage_order_and_get_consecutive_ids() -> None:
    # -2 was dropped (none of its rows applied): -3 and -1 become -1 and -2, in the order they are stored.
    before = pl.DataFrame({"pid": [5, -1, -2, -3]})
    after = pl.DataFrame({"pid": [5, -3, -1]})
    applied = pl.DataFrame({"_pid": [-1, 5, -3, -3]})
    before, after, applied = plan.numbered(before, after, applied)
    assert after.get_column("pid").to_list() == [5, -1, -2]
    assert before.get_column("pid").to_list() == [5, -2, -1]  # the dropped one's row is gone
    assert applied.get_column("_pid").to_list() == [-2, 5, -1, -1]
    assert writes.real_ids(applied, "_pid", 100).get_column("_pid").to_list() == [101, 5, 100, 100]


def test_new_profiles_already_in_order_are_left_as_they_are() -> None:
    frames = pl.DataFrame({"pid": [7, -1, -2]}), pl.DataFrame({"pid": [7, -1, -2]}), pl.DataFrame({"_pid": [-2, 7]})
    assert all(a is b for a, b in zip(plan.numbered(*frames), frames, strict=True))
