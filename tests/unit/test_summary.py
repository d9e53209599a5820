"""The end-of-run table: each column means one thing, and it fits the terminal."""

from __future__ import annotations

import io
import time

from rich.console import Console

from sftp_connector import summary
from sftp_connector.results import Counts, FileResult, GoalResult, RunResult

HOME = "/srv/partners/acme/incoming/customers/2026"


def _run() -> RunResult:
    imported = FileResult(f"{HOME}/customers_2026_12_04.csv.gpg", "imported",
                          counts=Counts(rows_read=10, rows_applied=7, rows_unchanged=1, rows_rejected=2,
                                        cells_rejected=3))
    old = FileResult(f"{HOME}/customers_2026_12_03.csv.gpg", "skipped_unchanged")
    customers = GoalResult("customers", "import-profiles", files=[imported, old])
    households = GoalResult("households", "import-groups", files=[FileResult(f"{HOME}/h.csv", "skipped_unchanged")])
    export = GoalResult("newsletter", "export-profiles", files=[
        FileResult("/out/newsletter_20261204_020000.csv.gpg", "exported", rows_exported=42)])
    return RunResult(run="r1", trigger="cli", started_at=0, goals=[customers, households, export])


def _table(width: int) -> list[str]:
    out = io.StringIO()
    summary.print_summary(_run(), Console(file=out, width=width, color_system=None))
    return out.getvalue().splitlines()


def _row(lines: list[str], goal: str) -> list[str]:
    return [cell.strip() for cell in next(line for line in lines if f"│ {goal}" in line).split("│")[1:-1]]


def test_columns_mean_one_thing_each() -> None:
    lines = _table(200)
    header = [cell.strip() for cell in next(line for line in lines if "┃ goal" in line).split("┃")[1:-1]]
    assert header == ["goal", "file", "status", "read", "applied", "unchanged", "rows rejected", "cells rejected",
                      "exported", "error"]
    imported = _row(lines, "customers")
    assert imported[1:9] == ["customers_2026_12_04.csv.gpg", "imported", "10", "7", "1", "2", "3", ""]
    exported = _row(lines, "newsletter")
    assert exported[1:9] == ["newsletter_20261204_020000.csv.gpg", "exported", "", "", "", "", "", "42"]
    # Unchanged files read the same in every goal: counted on one row, status skipped_unchanged.
    unchanged = [line for line in lines if "unchanged file(s)" in line]
    assert len(unchanged) == 2 and all("skipped_unchanged" in line for line in unchanged)


def test_a_narrow_terminal_gets_a_block_per_file_without_breaking_names() -> None:
    for width in (80, 120):
        lines = _table(width)
        assert all(len(line) <= width for line in lines)
        assert lines[1:3] == ["customers: customers_2026_12_04.csv.gpg imported",
                              "  read 10, applied 7, unchanged 1, rows rejected 2, cells rejected 3"]
        assert "newsletter: newsletter_20261204_020000.csv.gpg exported" in lines
        assert "  exported 42" in lines
        assert "households: 1 unchanged file(s) skipped_unchanged" in lines


def test_progress_shows_bytes_then_rows_with_rate_and_eta_and_drops_finished_bars() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    with summary.progress_bars(console) as report:
        assert report is not None
        report("customers_1.csv.gpg", 512, 1024, "bytes")
        report("customers_1.csv.gpg", 1024, 1024, "bytes")  # downloaded: its bar goes
        report("customers_1.csv.gpg rows merged", 1_000, 20_000, "rows")
        time.sleep(0.3)
        report("customers_1.csv.gpg rows merged", 5_000, 20_000, "rows")
        time.sleep(0.3)  # the display refreshes ten times a second
        shown = report.shown()
        report("customers_1.csv.gpg rows merged", 20_000, 20_000, "rows")
        after = report.shown()
    assert shown == ["customers_1.csv.gpg rows merged"]
    assert after == []
    text = out.getvalue()
    assert "5,000/20,000 rows" in text and "rows/s" in text


def test_no_progress_off_a_terminal() -> None:
    with summary.progress_bars(Console(file=io.StringIO(), force_terminal=False)) as report:
        assert report is None
