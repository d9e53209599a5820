"""The end-of-run summary: a table on a terminal, and the run in the `history --json` shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sftp_connector import history
from sftp_connector.goals.results import FileResult, RunResult
from sftp_connector.shown import visible


def run_json(result: RunResult) -> dict[str, Any]:
    """Given a run's result, return it in the `history --json` shape."""
    return {"run": result.run, "trigger": result.trigger, "started_at": history.iso(result.started_at),
            "finished_at": history.iso(result.finished_at), "status": result.status, "dry_run": result.dry_run,
            "goals": [g.as_json() for g in result.goals]}


def print_summary(result: RunResult, console: Console) -> None:
    """Given a run's result, print one table row per file and a closing status line."""
    table = Table(title=f"run {result.run}" + (" (dry run)" if result.dry_run else ""))
    for column in ("goal", "file", "status", "read", "applied", "unchanged", "rejected", "error"):
        table.add_column(column, overflow="fold")
    for goal in result.goals:
        # Unchanged files are counted, not listed: a goal may watch thousands of them.
        skipped = sum(1 for f in goal.files if f.status == "skipped_unchanged")
        shown = [f for f in goal.files if f.status != "skipped_unchanged"]
        if not shown:
            table.add_row(goal.goal, f"{skipped} unchanged file(s)" if skipped else "", goal.status, "", "", "", "",
                          visible(goal.error or ""))
        for file in shown:
            c = file.counts
            table.add_row(goal.goal, visible(file.path), file.status, str(c.rows_read), str(c.rows_applied),
                          str(c.rows_unchanged), str(c.rows_rejected + c.cells_rejected), visible(_problems(file)))
        if shown and skipped:
            table.add_row(goal.goal, f"{skipped} unchanged file(s)", "skipped_unchanged", "", "", "", "", "")
    console.print(table)
    console.print(f"{result.status}: {_touched(result, 'profiles')}" + (
        f"; {_touched(result, 'groups')}" if any(g.kind == "import-groups" for g in result.goals) else ""),
        markup=False, highlight=False)


def _problems(file: FileResult) -> str:
    """A file's error and warning, for the table's last column."""
    return "; ".join(filter(None, [file.error, f"warning: {file.warning}" if file.warning else None]))


def _touched(result: RunResult, what: str) -> str:
    """Created and updated counts of profiles (profile goals) or groups (import-groups goals)."""
    goals = [g for g in result.goals if (g.kind == "import-groups") == (what == "groups")]
    return f"{sum(g.profiles_created for g in goals)} {what} created, {sum(g.profiles_updated for g in goals)} updated"


@contextmanager
def progress_bars(console: Console) -> Iterator[Callable[[str, int, int], None] | None]:
    """Yield a (what, done, total) callback drawing progress bars on a terminal, or None elsewhere."""
    if not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bars:
        tasks: dict[str, Any] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bars.add_task(what, total=total)
            bars.update(tasks[what], completed=done)

        yield report
