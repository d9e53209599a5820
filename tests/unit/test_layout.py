"""Imports point one way, down the data flow: stages never import the runner, the CLI or a later stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sftp_connector"

# module → the sftp_connector modules it must never import (directly)
FORBIDDEN = {
    "errors": {"config", "store", "goals", "cli", "sftp", "pgp", "csvio", "merge"},
    "config": {"store", "goals", "cli", "sftp", "pgp", "csvio", "merge", "history"},
    "sftp": {"store", "goals", "cli", "pgp", "csvio", "merge", "history"},
    "pgp": {"store", "goals", "cli", "sftp", "csvio", "merge", "history"},
    "csvio": {"store", "goals", "cli", "sftp", "pgp", "merge", "history"},
    "rules": {"store", "goals", "cli", "sftp", "pgp", "csvio", "merge"},
    "identity": {"store", "goals", "cli", "sftp", "pgp", "csvio", "merge"},
    "merge": {"goals", "cli", "sftp", "pgp", "csvio", "history"},
    "processors": {"config", "store", "goals", "cli", "sftp", "pgp", "csvio", "merge", "history"},
    "linked": {"store", "goals", "cli", "sftp", "pgp", "merge", "history", "events"},
    "events": {"goals", "cli", "sftp", "pgp", "merge", "history"},
    "rowkeys": {"config", "store", "goals", "cli", "sftp", "pgp", "csvio", "merge", "history"},
    "store": {"goals", "cli", "sftp", "pgp", "csvio", "merge", "history"},
    "goals": {"cli", "demo"},
    "history": {"cli", "demo"},
}


def imported(path: Path) -> set[str]:
    """The top-level sftp_connector modules a file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sftp_connector"):
            parts = node.module.split(".")
            names |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sftp_connector.")}
    return names


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_imports_only_down_the_data_flow(module: str) -> None:
    target = PACKAGE / module
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    for file in files:
        wrong = imported(file) & FORBIDDEN[module]
        assert not wrong, f"{file.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_nothing_imports_the_cli() -> None:
    for file in PACKAGE.rglob("*.py"):
        if file.name not in ("cli.py", "__main__.py"):
            assert "cli" not in imported(file), file
