"""Run history: record runs, goals and files with their counters; read them back; write reject files."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sftp_connector import sftp
from sftp_connector.errors import RowReject
from sftp_connector.goals.results import RunResult
from sftp_connector.store import models
from sftp_connector.store.db import Store


def iso(timestamp: float | None) -> str | None:
    """Given UTC epoch seconds, return ISO 8601 with a Z, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def begin(store: Store, result: RunResult) -> None:
    """Given a run about to start, record it as running; mark runs left running by a killed process as interrupted."""
    run = models.Run.__table__
    with store.transaction() as conn:
        conn.execute(sa.update(run).where(run.c.status == "running").values(status="interrupted"))
        conn.execute(sa.insert(run).values(id=result.run, trigger=result.trigger, started_at=result.started_at,
                                           status="running", dry_run=result.dry_run))


def finish(store: Store, result: RunResult) -> None:
    """Given a finished run, record its status, goals and files."""
    run, goal_run, file_run = (models.Run.__table__, models.GoalRun.__table__, models.FileRun.__table__)
    with store.transaction() as conn:
        conn.execute(sa.update(run).where(run.c.id == result.run)
                     .values(finished_at=result.finished_at, status=result.status))
        for goal in result.goals:
            values = goal.as_json(files=False)
            values.pop("goal")
            goal_id = conn.execute(sa.insert(goal_run).values(
                run=result.run, goal=goal.goal, started_at=goal.started_at, finished_at=goal.finished_at, **values,
            )).inserted_primary_key[0]
            rows = [_file_row(goal_id, file.as_json()) for file in goal.files]
            if rows:
                conn.execute(sa.insert(file_run), rows)


def _file_row(goal_run_id: int, entry: dict[str, Any]) -> dict[str, Any]:
    own = ("path", "status", "sha256", "error", "signer")
    return {"goal_run_id": goal_run_id, **{k: entry[k] for k in own},
            "counts": {k: v for k, v in entry.items() if k not in own}}


def recent(store: Store, *, goal: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Given an optional goal filter, return the newest runs first in the `history --json` shape."""
    run, goal_run = models.Run.__table__, models.GoalRun.__table__
    query = sa.select(run).order_by(run.c.started_at.desc()).limit(limit)
    if goal:
        query = query.where(run.c.id.in_(sa.select(goal_run.c.run).where(goal_run.c.goal == goal)))
    with store.engine.connect() as conn:
        runs = conn.execute(query).mappings().all()
        return [_run_json(conn, dict(r), goal) for r in runs]


def _run_json(conn: sa.Connection, run: dict[str, Any], goal: str | None) -> dict[str, Any]:
    goal_run, file_run = models.GoalRun.__table__, models.FileRun.__table__
    query = sa.select(goal_run).where(goal_run.c.run == run["id"]).order_by(goal_run.c.id)
    if goal:
        query = query.where(goal_run.c.goal == goal)
    goals = []
    for g in conn.execute(query).mappings():
        files = conn.execute(sa.select(file_run).where(file_run.c.goal_run_id == g["id"])
                             .order_by(file_run.c.id)).mappings()
        goals.append({
            "goal": g["goal"], "kind": g["kind"], "status": g["status"], "error": g["error"],
            "profiles_created": g["profiles_created"], "profiles_updated": g["profiles_updated"],
            "last_profiles": g["last_profiles"], "unique_profiles_exchanged": g["unique_profiles_exchanged"],
            "files": [{"path": f["path"], "status": f["status"], "sha256": f["sha256"], **f["counts"],
                       "error": f["error"]} for f in files],
        })
    return {"run": run["id"], "trigger": run["trigger"], "started_at": iso(run["started_at"]),
            "finished_at": iso(run["finished_at"]), "status": run["status"], "dry_run": bool(run["dry_run"]),
            "goals": goals}


def write_rejects(state_dir: Path, run: str, remote_path: str, rejects: Sequence[RowReject]) -> Path | None:
    """Given a file's rejected rows and cells, write them to state/rejects/<run>/<file>.csv; return its path.

    Rejected rows are customer data in clear: the folders are 0700 and the file 0600.
    """
    if not rejects:
        return None
    folder = state_dir / "rejects"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # an older version made it with the default mode
    (folder / run).mkdir(mode=0o700, exist_ok=True)
    target = folder / run / (sftp.local_name(remote_path) + ".csv")
    temp = target.with_name(target.name + ".tmp")
    temp.unlink(missing_ok=True)  # a leftover would keep its mode
    with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", newline="",
              encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "row", "column", "reason", "value"])
        for reject in rejects:
            writer.writerow([reject.file, reject.row, reject.column or "", reject.reason, reject.value or ""])
    os.replace(temp, target)
    return target
