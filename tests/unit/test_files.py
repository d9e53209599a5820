"""files: which listed files a goal reads, how linked files pair, done markers, and change detection."""

from __future__ import annotations

import pytest

from sftp_connector import files
from sftp_connector.config import models
from sftp_connector.errors import InputError
from sftp_connector.sftp import RemoteFile
from sftp_connector.store.models import ImportedFile


def listed(*names: str, size: int = 10, mtime: int = 1000) -> list[RemoteFile]:
    return [RemoteFile(f"/in/{name}", size, mtime) for name in names]


def entry(**fields: object) -> models.FileEntry:
    return models.FileEntry.model_validate({"name": "customers", "directory": "in", **fields})


def test_a_glob_matches_whole_names_in_name_order_with_its_wildcard_value() -> None:
    found = files.match(entry(pattern="customers_*.csv"),
                        listed("customers_2.csv", "customers_10.csv", "customers_1.csv.bak", "other.csv"))
    assert [(m.remote.name, m.wildcard) for m in found] == [("customers_10.csv", "10"), ("customers_2.csv", "2")]


def test_a_glob_star_matches_any_character_and_brackets_are_a_set() -> None:
    found = files.match(entry(pattern="c_[ab]?.csv"), listed("c_a1.csv", "c_b22.csv", "c_c1.csv", "c_a\n.csv"))
    assert [m.remote.name for m in found] == ["c_a\n.csv", "c_a1.csv"]


def test_a_regex_matches_whole_names() -> None:
    found = files.match(entry(regex=r"cust_(\d+)\.csv"), listed("cust_7.csv", "cust_7.csv.gpg", "cust_x.csv"))
    assert [(m.remote.name, m.wildcard) for m in found] == [("cust_7.csv", "7")]


def test_linked_files_pair_by_wildcard_value() -> None:
    orders = entry(name="orders", pattern="orders_*.csv")
    root = files.match(entry(pattern="customers_*.csv"), listed("customers_244.csv"))[0]
    candidates = files.match(orders, listed("orders_243.csv", "orders_244.csv"))
    assert files.pair(orders, candidates, root).remote.name == "orders_244.csv"
    with pytest.raises(InputError, match=r"linked file orders is missing for customers_244\.csv"):
        files.pair(orders, candidates[:1], root)


def test_without_a_wildcard_exactly_one_linked_file() -> None:
    lines = entry(name="lines", pattern="lines.csv")
    root = files.match(entry(pattern="orders.csv"), listed("orders.csv"))[0]
    assert files.pair(lines, files.match(lines, listed("lines.csv")), root).remote.name == "lines.csv"
    with pytest.raises(InputError, match=r"expected one file matching lines\.csv in in, found 0"):
        files.pair(lines, [], root)


@pytest.mark.parametrize(("marker", "name", "expected"), [
    (".done", "a.csv", "a.csv.done"), ("{stem}.ok", "a.csv", "a.ok"), ("{name}.ready", "a.csv", "a.csv.ready"),
])
def test_done_marker_names(marker: str, name: str, expected: str) -> None:
    assert files.done_marker_name(marker, name) == expected
    assert files.is_marker(marker, expected, {name, expected})
    assert not files.is_marker(marker, name, {name, expected})


@pytest.mark.parametrize("marker", ["{path}.ok", "{name!r}", "/../{name}", "{"])
def test_a_done_marker_never_points_elsewhere(marker: str) -> None:
    with pytest.raises(InputError, match="done_marker"):
        files.done_marker_name(marker, "a.csv")


def record(size: int = 10, mtime: int = 1000, listed_at: float = 1010.0, digest: str = "d") -> ImportedFile:
    return ImportedFile(goal="g", path="/in/a.csv", size=size, mtime=mtime, sha256="s", config_digest=digest,
                        listed_at=listed_at, imported_at=listed_at, run="r")


def test_unchanged_by_listing_needs_size_mtime_configuration_and_a_settled_mtime() -> None:
    remote = listed("a.csv")[0]
    assert files.unchanged_by_listing(remote, record(), "d", force=False)
    assert not files.unchanged_by_listing(remote, record(), "d", force=True)
    assert not files.unchanged_by_listing(remote, None, "d", force=False)
    assert not files.unchanged_by_listing(remote, record(size=11), "d", force=False)
    assert not files.unchanged_by_listing(remote, record(mtime=999), "d", force=False)
    assert not files.unchanged_by_listing(remote, record(digest="other"), "d", force=False)
    # Recorded within a second of its mtime: it may have changed since without its mtime showing it.
    assert not files.unchanged_by_listing(remote, record(listed_at=1000 + files.MTIME_SAFETY_S - 1), "d", force=False)


def test_unchanged_by_content_needs_the_checksum_and_configuration() -> None:
    assert files.unchanged_by_content("s", record(), "d", force=False)
    assert not files.unchanged_by_content("t", record(), "d", force=False)
    assert not files.unchanged_by_content("s", record(digest="x"), "d", force=False)
    assert not files.unchanged_by_content("s", record(), "d", force=True)


def test_stable_files_kept_size_and_mtime_between_listings() -> None:
    first = listed("a.csv", "b.csv", "c.csv")
    second = [RemoteFile("/in/a.csv", 10, 1000), RemoteFile("/in/b.csv", 11, 1000), RemoteFile("/in/c.csv", 10, 1001)]
    assert files.stable(first, second) == {"/in/a.csv"}
