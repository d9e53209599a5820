"""Run history in the store: runs, their goals and their files, written and read back; and whether the
store answers at all.

`history.py` owns what a run records and the shape `history` prints; this module owns the SQL.
The caller owns the transaction of each write.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sftp_connector.errors import StoreError
from sftp_connector.store import models
from sftp_connector.store.db import Store

_RUN, _GOAL_RUN, _FILE_RUN = (models.table_of(model) for model in (models.Run, models.GoalRun, models.FileRun))


def start(conn: Connection, *, run: str, trigger: str, started_at: float, dry_run: bool) -> None:
    """Given a run about to start, record it as running; mark runs left running by a killed process as
    interrupted."""
    conn.execute(sa.update(_RUN).where(_RUN.c.status == "running").values(status="interrupted"))
    conn.execute(sa.insert(_RUN).values(id=run, trigger=trigger, started_at=started_at, status="running",
                                        dry_run=dry_run))


def finish(conn: Connection, *, run: str, finished_at: float | None, status: str) -> None:
    """Given a finished run, record when it finished and how."""
    conn.execute(sa.update(_RUN).where(_RUN.c.id == run).values(finished_at=finished_at, status=status))


def add_goal(conn: Connection, run: str, values: dict[str, Any], files: list[dict[str, Any]]) -> None:
    """Given a run, one goal's columns (goal, started_at, finished_at, counters…) and its files' columns
    (path, status, sha256, error, signer, counts), record them."""
    goal_id = _inserted_id(conn.execute(sa.insert(_GOAL_RUN).values(run=run, **values)))
    if files:
        conn.execute(sa.insert(_FILE_RUN), [{"goal_run_id": goal_id, **file} for file in files])


def recent(conn: Connection, *, goal: str | None = None, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
    """Given an optional goal, return the newest runs (of that goal) first, each as its columns; `offset` runs
    newer than those are passed over."""
    query = sa.select(_RUN).order_by(_RUN.c.started_at.desc()).limit(limit).offset(offset)
    if goal:
        query = query.where(_RUN.c.id.in_(sa.select(_GOAL_RUN.c.run).where(_GOAL_RUN.c.goal == goal)))
    return [dict(row) for row in conn.execute(query).mappings()]


def last_goal_run(conn: Connection, goal: str) -> dict[str, Any] | None:
    """Given a goal, return its newest recorded goal run's columns (with the run's id as `run`), or None."""
    row = conn.execute(sa.select(_GOAL_RUN).where(_GOAL_RUN.c.goal == goal).order_by(_GOAL_RUN.c.id.desc())
                       .limit(1)).mappings().first()
    return None if row is None else dict(row)


def one(conn: Connection, run: str) -> dict[str, Any] | None:
    """Given a run id, return the run's columns, or None."""
    row = conn.execute(sa.select(_RUN).where(_RUN.c.id == run)).mappings().first()
    return None if row is None else dict(row)


def totals(conn: Connection, ids: list[str]) -> dict[str, dict[str, int]]:
    """Given run ids, return for each recorded run: its goals, how many failed, and rows read over its files."""
    found: dict[str, dict[str, int]] = {}
    if not ids:
        return found
    goal_of: dict[int, str] = {}
    for goal_id, run, status in conn.execute(sa.select(_GOAL_RUN.c.id, _GOAL_RUN.c.run, _GOAL_RUN.c.status)
                                             .where(_GOAL_RUN.c.run.in_(ids))):
        entry = found.setdefault(run, {"goals": 0, "failed": 0, "rows": 0})
        entry["goals"] += 1
        entry["failed"] += status == "failed"
        goal_of[goal_id] = run
    if goal_of:
        for goal_id, counts in conn.execute(sa.select(_FILE_RUN.c.goal_run_id, _FILE_RUN.c.counts)
                                            .where(_FILE_RUN.c.goal_run_id.in_(list(goal_of)))):
            found[goal_of[goal_id]]["rows"] += int((counts or {}).get("rows_read") or 0)
    return found


def goals_of(conn: Connection, run: str, *, goal: str | None = None) -> list[dict[str, Any]]:
    """Given a run (and optionally a goal), return its goals in the order they ran, each as its columns."""
    query = sa.select(_GOAL_RUN).where(_GOAL_RUN.c.run == run).order_by(_GOAL_RUN.c.id)
    if goal:
        query = query.where(_GOAL_RUN.c.goal == goal)
    return [dict(row) for row in conn.execute(query).mappings()]


def files_of(conn: Connection, goal_run_id: int) -> list[dict[str, Any]]:
    """Given a goal of a run (its id), return its files in the order they were recorded, each as its columns."""
    query = sa.select(_FILE_RUN).where(_FILE_RUN.c.goal_run_id == goal_run_id).order_by(_FILE_RUN.c.id)
    return [dict(row) for row in conn.execute(query).mappings()]


def last_started(conn: Connection, trigger: str) -> float | None:
    """Given a trigger (schedule, manual), return when the last run it started began, or None."""
    return conn.execute(sa.select(sa.func.max(_RUN.c.started_at)).where(_RUN.c.trigger == trigger)).scalar()


def answers(store: Store) -> bool:
    """Given a store, return True if its database answers a query now."""
    try:
        with store.connection() as conn:
            conn.execute(sa.text("SELECT 1"))
    except StoreError:
        return False
    return True


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
