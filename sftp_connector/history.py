"""Run history: record runs, goals and files with their counters; read them back; write reject files."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy.engine import Connection

from sftp_connector.results import Counts, FileResult, GoalResult, RunResult
from sftp_connector.store import runs
from sftp_connector.store.db import Store


def begin(store: Store, result: RunResult) -> None:
    """Given a run about to start, record it as running; mark runs left running by a killed process as interrupted."""
    with store.transaction() as conn:
        runs.start(conn, run=result.run, trigger=result.trigger, started_at=result.started_at,
                   dry_run=result.dry_run)


def finish(store: Store, result: RunResult) -> None:
    """Given a finished run, record its status, goals and files."""
    with store.transaction() as conn:
        runs.finish(conn, run=result.run, finished_at=result.finished_at, status=result.status)
        for goal in result.goals:
            values = goal.as_json(files=False)
            values.pop("goal")
            runs.add_goal(conn, result.run, {"goal": goal.goal, "started_at": goal.started_at,
                                             "finished_at": goal.finished_at, **values},
                          [_file_row(file.as_json()) for file in goal.files])


def _file_row(entry: dict[str, Any]) -> dict[str, Any]:
    own = ("path", "status", "sha256", "error", "signer", "warning")
    return {**{k: entry[k] for k in own}, "counts": {k: v for k, v in entry.items() if k not in own}}


def recent(store: Store, *, goal: str | None = None, limit: int = 20) -> list[RunResult]:
    """Given an optional goal filter, return the newest runs first, as they were recorded (print them with
    `RunResult.as_json`, as `run --json` does)."""
    with store.connection() as conn:
        return [_recorded(conn, run, goal) for run in runs.recent(conn, goal=goal, limit=limit)]


def recorded(store: Store, run: dict[str, Any]) -> RunResult:
    """Given a run's stored columns (store.runs.one), return the run as it was recorded, with all its goals."""
    with store.connection() as conn:
        return _recorded(conn, run, None)


def _recorded(conn: Connection, run: dict[str, Any], goal: str | None) -> RunResult:
    """A recorded run (its goals and files) as the result it was."""
    result = RunResult(run=run["id"], trigger=run["trigger"], started_at=run["started_at"],
                       dry_run=bool(run["dry_run"]), finished_at=run["finished_at"], status=run["status"])
    for g in runs.goals_of(conn, run["id"], goal=goal):
        files = [FileResult(f["path"], f["status"], f["sha256"], Counts(**{k: v for k, v in f["counts"].items()
                                                                           if k in _COUNTED}),
                            error=f["error"], signer=f["signer"], rows_exported=f["counts"].get("rows_exported", 0),
                            warning=f["warning"]) for f in runs.files_of(conn, g["id"])]
        result.goals.append(GoalResult(
            g["goal"], g["kind"], g["status"], g["error"], started_at=g["started_at"], finished_at=g["finished_at"],
            profiles_created=g["profiles_created"], profiles_updated=g["profiles_updated"],
            last_profiles=g["last_profiles"], unique_profiles_exchanged=g["unique_profiles_exchanged"], files=files))
    return result


_COUNTED = {f.name for f in fields(Counts)}
