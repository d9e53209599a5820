"""The end-of-run summary: a table on a terminal, and the run in the `history --json` shape."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from sftp_connector.results import FileResult, GoalResult, RunResult
from sftp_connector.shown import visible

COLUMNS = ("goal", "file", "status", "read", "applied", "unchanged", "rows rejected", "cells rejected", "exported",
           "error")
WIDE = 150
"""Terminal columns from which the summary is a table; below, one block of lines per file."""


def print_summary(result: RunResult, console: Console) -> None:
    """Given a run's result, print one row per file (files are named, their paths are in history) and a
    closing status line: a table on a wide terminal, a block of lines per file on a narrow one."""
    rows = [_cells(goal, file) for goal in result.goals for file in _listed(goal)]
    title = f"run {result.run}" + (" (dry run)" if result.dry_run else "")
    if console.width >= WIDE:
        table = Table(title=title)
        for column in COLUMNS:
            wraps = column in ("file", "error")
            table.add_column(column, overflow="fold" if wraps else "ellipsis", no_wrap=not wraps,
                             justify="right" if column in COLUMNS[3:9] else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        console.print(title, markup=False, highlight=False)
        for row in rows:
            _print_block(row, console)
    console.print(f"{result.status}: {_touched(result, 'profiles')}" + (
        f"; {_touched(result, 'groups')}" if any(g.kind == "import-groups" for g in result.goals) else ""),
        markup=False, highlight=False)


def _listed(goal: GoalResult) -> list[FileResult | str]:
    """A goal's rows: each file but the unchanged ones, which are counted on one row (a goal may watch thousands
    of them); a goal with no file at all gets one row (its status and error)."""
    unchanged = sum(1 for f in goal.files if f.status == "skipped_unchanged")
    shown: list[FileResult | str] = [f for f in goal.files if f.status != "skipped_unchanged"]
    if unchanged:
        shown.append(f"{unchanged} unchanged file(s)")
    return shown or [""]


def _cells(goal: GoalResult, file: FileResult | str) -> tuple[str, ...]:
    """One row: a file with the counts that apply to its goal's kind, or a goal-level line (text)."""
    if isinstance(file, str):
        status = "skipped_unchanged" if file else goal.status
        return (goal.goal, file, status, *[""] * 6, visible(goal.error or "") if not file else "")
    name = visible(posixpath.basename(file.path))
    if goal.kind == "export-profiles":
        return (goal.goal, name, file.status, *[""] * 5, str(file.rows_exported), visible(_problems(file)))
    c = file.counts
    counts = (c.rows_read, c.rows_applied, c.rows_unchanged, c.rows_rejected, c.cells_rejected)
    return (goal.goal, name, file.status, *map(str, counts), "", visible(_problems(file)))


def _print_block(row: tuple[str, ...], console: Console) -> None:
    """One row on a narrow terminal: goal, file and status, then the counts that are set, then the error."""
    goal, name, status, *counts, error = row
    say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"{goal}: {name} {status}" if name else f"{goal}: {status}")
    numbers = [f"{label} {value}" for label, value in zip(COLUMNS[3:9], counts, strict=True) if value]
    if numbers:
        say("  " + ", ".join(numbers))
    if error:
        say(f"  error: {error}")


def _problems(file: FileResult) -> str:
    """A file's error and warning, for the table's last column."""
    return "; ".join(filter(None, [file.error, f"warning: {file.warning}" if file.warning else None]))


def _touched(result: RunResult, what: str) -> str:
    """Created and updated counts of profiles (profile goals) or groups (import-groups goals)."""
    goals = [g for g in result.goals if (g.kind == "import-groups") == (what == "groups")]
    return f"{sum(g.profiles_created for g in goals)} {what} created, {sum(g.profiles_updated for g in goals)} updated"


@contextmanager
def progress_bars(console: Console) -> Iterator[Bars | None]:
    """Yield a progress callback drawing bars on a terminal (downloads in bytes, merges and exports in rows,
    each with its rate and time left), or None elsewhere: off a terminal the log lines say what happens."""
    if not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), _Amount(), _Rate(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bars:
        yield Bars(bars)


class Bars:
    """The progress callback (see goals.context.Progress): one bar per (what), gone once it is done, so the
    bars of finished downloads and merges are not drawn again while later work goes on."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, what: str, done: int, total: int, unit: str) -> None:
        if what not in self._tasks:
            self._tasks[what] = self._progress.add_task(what, total=total or None, unit=unit)
        task = self._tasks[what]
        self._progress.update(task, completed=done, total=total or None)
        if total and done >= total:
            self._progress.remove_task(task)
            del self._tasks[what]

    def shown(self) -> list[str]:
        """The bars on screen now, by what they count."""
        return list(self._tasks)


class _Amount(ProgressColumn):
    """Bytes as a download column shows them; rows as "5,000/20,000 rows"."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self._bytes.render(task)
        of = f"/{task.total:,.0f}" if task.total else ""
        return Text(f"{task.completed:,.0f}{of} rows")


class _Rate(ProgressColumn):
    """Bytes or rows a second."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self._bytes.render(task)
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "")
