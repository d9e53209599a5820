"""linked: joining a root file with its linked files, orphans, and each file's rows back out of the join."""

from __future__ import annotations

import polars as pl
import pytest

from sftp_connector import linked
from sftp_connector.config import models
from sftp_connector.csvio import CsvData
from sftp_connector.errors import InputError


def part(name: str, rows: dict[str, list[str]], link: dict[str, str] | None = None) -> linked.Part:
    frame = pl.DataFrame(rows).with_columns(_row=pl.int_range(1, len(next(iter(rows.values()))) + 1))
    entry = models.FileEntry.model_validate({"name": name, "pattern": f"{name}*.csv",
                                             **({"link": link} if link else {})})
    return linked.Part(entry, f"{name}_1.csv", CsvData(frame, tuple(rows), (), frame.height))


ORDERS = part("orders", {"order_id": ["O1", "O2"], "email": ["a@x", "b@x"]})
LINES = part("lines", {"order_id": ["O1", "O1", "O9", ""], "sku": ["S1", "S2", "S3", "S4"]},
             {"parent": "order_id", "child": "order_id"})


def test_children_join_their_parent_rows_in_file_order() -> None:
    joined = linked.join([ORDERS, LINES])
    rows = joined.frame.select("order_id", "email", "lines.sku").rows()
    assert rows == [("O1", "a@x", "S1"), ("O1", "a@x", "S2"), ("O2", "b@x", None)]


def test_rows_without_a_parent_are_orphans_naming_why() -> None:
    joined = linked.join([ORDERS, LINES])
    assert [(o.row, o.reason) for o in joined.orphans["lines"]] == [
        (3, "no row of orders_1.csv has order_id = 'O9'"), (4, "`order_id` is empty: no parent row")]


def test_each_file_comes_back_out_once_per_record() -> None:
    joined = linked.join([ORDERS, LINES])
    assert joined.level("orders", []).select("order_id", "_row").rows() == [("O1", 1), ("O2", 2)]
    assert joined.level("lines", ["order_id"]).select("order_id", "lines.sku", "_row").rows() == [
        ("O1", "S1", 1), ("O1", "S2", 2)]


def test_a_missing_link_key_names_both_files() -> None:
    bad = part("lines", {"order": ["O1"], "sku": ["S1"]}, {"parent": "order_id", "child": "order_id"})
    said = r"link key order_id is not a column of lines_1\.csv \(linked to orders_1\.csv"
    with pytest.raises(InputError, match=said):
        linked.join([ORDERS, bad])
