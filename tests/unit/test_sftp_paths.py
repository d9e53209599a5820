"""The transport's pure path helpers: where sftp.home and goal directories lead."""

from __future__ import annotations

import pytest

from sftp_connector import sftp


@pytest.mark.parametrize(("home", "below"), [
    ("~", ""), ("~/", ""), (".", ""), ("~/in", "in"), ("in/../x", "x"), ("data/", "data"), ("/", None),
    ("/srv/acme", None),
])
def test_below_login(home: str, below: str | None) -> None:
    assert sftp.below_login(home) == below


@pytest.mark.parametrize(("home", "directory", "path"), [
    ("/", "in", "/in"), ("/home/a", "in/../out", "/home/a/out"), ("/home/a", "/abs", "/abs"), ("/", "", "/"),
])
def test_resolve(home: str, directory: str, path: str) -> None:
    assert sftp.resolve(home, directory) == path
