"""Queries of export goals: profiles of a segment a page at a time, events of those profiles, the watermark.

The WHERE expressions come from `segments` with their parameters already bound by name;
pages are read by id (keyset) on the raw DB-API cursor, so memory stays flat for millions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sftp_connector.store import models, queries

PAGE = 50_000


def profile_pages(
    conn: Connection, *, picks: list[str], where: str, params: dict[str, Any], schema: dict[str, Any],
    page: int = PAGE,
) -> Iterator[pl.DataFrame]:
    """Given select expressions over `profile p`, a WHERE expression and its parameters, and the schema of
    (p.id, picks…), yield them in id order, a page at a time, as frames of that schema."""
    select = f"SELECT p.id{''.join(', ' + pick for pick in picks)} FROM profile p"
    for rows in queries.pages(conn, select, where=where, params=params, key="p.id", page=page):
        yield pl.DataFrame(rows, schema=schema, orient="row")


def event_types(conn: Connection) -> list[str]:
    """Return every event type the store holds, sorted."""
    return [row[0] for row in queries.fetch(conn, "SELECT DISTINCT type FROM event ORDER BY type", {})]


def events_of(conn: Connection, *, where: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Given a WHERE expression over `event e` joined to `profile p`, return (profile_id, event_id, time,
    properties, nested) rows in time order."""
    return queries.fetch(conn, "SELECT e.profile_id, e.event_id, e.time, e.properties, e.nested FROM event e "
                        f"JOIN profile p ON p.id = e.profile_id WHERE {where} ORDER BY e.time, e.id", params)


def watermark(conn: Connection, goal: str) -> float | None:
    """Given an export goal, return its watermark, or None before its first successful export."""
    table = models.ExportState.__table__
    return conn.execute(sa.select(table.c.watermark).where(table.c.goal == goal)).scalar()


def save_watermark(conn: Connection, goal: str, value: float, last_file: str, run: str) -> None:
    """Given an export goal and the time its successful export began reading, move its watermark there."""
    table = models.ExportState.__table__
    values = {"watermark": value, "last_file": last_file, "run": run}
    if conn.execute(sa.update(table).where(table.c.goal == goal).values(**values)).rowcount == 0:
        conn.execute(sa.insert(table).values(goal=goal, **values))

