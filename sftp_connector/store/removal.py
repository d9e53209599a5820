"""Queries that remove data: erasing profiles on request, and what an overwrite goal clears.

Both run inside the import's transaction, so a refused or failed file removes nothing.
"""

from __future__ import annotations

import io

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sftp_connector.store import layout, models
from sftp_connector.store.db import Store
from sftp_connector.store.queries import Entity


def erase(store: Store, conn: Connection, ids: pl.Series, entity: Entity, *, goal: str, now: float) -> None:
    """Given profile (or group) ids, delete them (their side-table rows too) with their identity entries, group
    links and events, and
    remember them as erased (their ids are never reused; their row records are ignored from now on)."""
    if ids.is_empty():
        return
    frame = ids.cast(pl.Int64).alias("id").unique().to_frame()
    store.rows_into(conn, "erasing", frame, temp=True, analyze=True)
    conn.exec_driver_sql(f"DELETE FROM {entity.identity} WHERE profile_id IN (SELECT id FROM erasing)")
    for table in [entity.table, *layout.side_tables(conn, entity.columns, entity.table)]:
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE id IN (SELECT id FROM erasing)")
    if entity.table == "profile":
        conn.exec_driver_sql("DELETE FROM profile_group WHERE profile_id IN (SELECT id FROM erasing)")
        conn.exec_driver_sql("DELETE FROM event WHERE profile_id IN (SELECT id FROM erasing)")
        conn.execute(sa.insert(models.table_of(models.ErasedProfile)), [{"id": i, "erased_at": now, "goal": goal}
                                        for i in frame.get_column("id").to_list()])


def snapshot(conn: Connection, goal: str) -> pl.Series | None:
    """Given an overwrite goal, return the profiles its latest file set held, or None before its first one."""
    table = models.table_of(models.GoalSnapshot)
    blob = conn.execute(sa.select(table.c.data).where(table.c.goal == goal)).scalar()
    return pl.read_ipc(io.BytesIO(blob)).to_series() if blob is not None else None


def save_snapshot(conn: Connection, goal: str, ids: pl.Series) -> None:
    """Given an overwrite goal and the profiles its file set held, remember them for the next one."""
    table = models.table_of(models.GoalSnapshot)
    ids = ids.cast(pl.Int64).alias("id").unique().sort()
    buffer = io.BytesIO()
    ids.to_frame().write_ipc(buffer, compression="zstd")
    values = {"count": ids.len(), "data": buffer.getvalue()}
    if conn.execute(sa.update(table).where(table.c.goal == goal).values(**values)).rowcount == 0:
        conn.execute(sa.insert(table).values(goal=goal, **values))


def goal_rows(conn: Connection, goal: str) -> list[tuple[int, pl.DataFrame]]:
    """Given a goal, return (file record id, its remembered rows) for every file it imported."""
    files, rows = models.table_of(models.ImportedFile), models.table_of(models.ImportedRows)
    found = conn.execute(sa.select(rows.c.file_id, rows.c.data).join(files, files.c.id == rows.c.file_id)
                         .where(files.c.goal == goal).order_by(rows.c.file_id, rows.c.seq)).all()
    by_file: dict[int, list[pl.DataFrame]] = {}
    for file_id, blob in found:
        by_file.setdefault(file_id, []).append(pl.read_ipc(io.BytesIO(blob)))
    return [(file_id, pl.concat(frames)) for file_id, frames in by_file.items()]


def forget_rows(conn: Connection, file_id: int, keep: pl.DataFrame) -> None:
    """Given a file record and the rows to keep, replace its remembered rows with them (one blob)."""
    table = models.table_of(models.ImportedRows)
    conn.execute(sa.delete(table).where(table.c.file_id == file_id))
    if keep.is_empty():
        return
    buffer = io.BytesIO()
    keep.write_ipc(buffer, compression="zstd")
    conn.execute(sa.insert(table).values(file_id=file_id, seq=1, data=buffer.getvalue()))


def unlink_goal(store: Store, conn: Connection, goal: str, ids: pl.Series) -> None:
    """Given a goal and profiles, remove the group links that goal made for them."""
    if ids.is_empty():
        return
    store.rows_into(conn, "unlinking", ids.cast(pl.Int64).alias("id").to_frame(), temp=True, analyze=True)
    conn.execute(sa.text("DELETE FROM profile_group WHERE goal = :g AND profile_id IN (SELECT id FROM unlinking)"),
                 {"g": goal})
