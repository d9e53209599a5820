"""removals: erasure requests are split from the rows to merge by the goal's delete_when rule."""

from __future__ import annotations

import polars as pl
import pytest

from sftp_connector import removals
from sftp_connector.config import models
from sftp_connector.errors import InputError


def goal(delete_when: dict[str, str] | None) -> models.ImportProfiles:
    return models.ImportProfiles.model_validate({
        "kind": "import-profiles", "name": "g", "files": [{"name": "f", "pattern": "*.csv"}],
        "identifiers": [{"field": "email", "property": "email"}], "mappings": [{"field": "name", "property": "n"}],
        **({"delete_when": delete_when} if delete_when else {})})


ROWS = pl.DataFrame({"email": ["a@x", "b@x", "c@x", "d@x"], "status": ["active", " deleted ", None, "deleted"],
                     "_row": [1, 2, 3, 4]})


def test_rows_marked_for_erasure_are_split_off_in_file_order() -> None:
    kept, erased = removals.split_erasures(ROWS, goal({"field": "status", "equals": "deleted"}), "f.csv")
    assert kept.get_column("_row").to_list() == [1, 3]
    assert erased.get_column("_row").to_list() == [2, 4]  # surrounding blanks do not hide a request


def test_without_a_rule_nothing_is_erased() -> None:
    kept, erased = removals.split_erasures(ROWS, goal(None), "f.csv")
    assert kept.equals(ROWS) and erased.is_empty() and erased.columns == ROWS.columns


def test_a_rule_on_a_missing_field_names_it_and_the_file() -> None:
    with pytest.raises(InputError, match="delete_when field gone is not a column of the file") as caught:
        removals.split_erasures(ROWS, goal({"field": "gone", "equals": "x"}), "f.csv")
    assert caught.value.file == "f.csv"
