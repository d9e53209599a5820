"""--help shows names and value types an operator reads, not Python types."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from sftp_connector.cli import app

COMMANDS = [[], ["run"], ["daemon"], ["validate"], ["preview"], ["history"], ["init"], ["keys", "import"],
            ["keys", "list"], ["profiles", "dump"], ["profiles", "get"], ["store", "upgrade"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_shows_no_python_types(command: list[str]) -> None:
    done = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert done.exit_code == 0, done.output
    assert not re.search(r"<(bool|list\[.*?\])>", done.output), done.output


def test_run_help_names_its_arguments_and_value_types() -> None:
    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "120"}).output
    assert "[GOAL]..." in text
    assert "<bool>" not in text
    rows = CliRunner().invoke(app, ["preview", "--help"], env={"COLUMNS": "120"}).output
    assert "<int" in rows  # --rows takes a number: its type is worth showing
