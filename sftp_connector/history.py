"""Run history: record runs, goals and files with their counters; read them back; write reject files."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from sftp_connector.goals.results import RunResult
from sftp_connector.store import runs
from sftp_connector.store.db import Store


def iso(timestamp: float | None) -> str | None:
    """Given UTC epoch seconds, return ISO 8601 with a Z, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def recent(store: Store, *, goal: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Given an optional goal filter, return the newest runs first in the `history --json` shape."""
    with store.engine.connect() as conn:
        return [_run_json(conn, run, goal) for run in runs.recent(conn, goal=goal, limit=limit)]


def _run_json(conn: Connection, run: dict[str, Any], goal: str | None) -> dict[str, Any]:
    goals = []
    for g in runs.goals_of(conn, run["id"], goal=goal):
        files = runs.files_of(conn, g["id"])
        goals.append({
            "goal": g["goal"], "kind": g["kind"], "status": g["status"], "error": g["error"],
            "profiles_created": g["profiles_created"], "profiles_updated": g["profiles_updated"],
            "last_profiles": g["last_profiles"], "unique_profiles_exchanged": g["unique_profiles_exchanged"],
            "files": [{"path": f["path"], "status": f["status"], "sha256": f["sha256"], **f["counts"],
                       "error": f["error"], "warning": f["warning"]} for f in files],
        })
    return {"run": run["id"], "trigger": run["trigger"], "started_at": iso(run["started_at"]),
            "finished_at": iso(run["finished_at"]), "status": run["status"], "dry_run": bool(run["dry_run"]),
            "goals": goals}


