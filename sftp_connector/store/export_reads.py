"""Queries of export goals: the profiles of a selection a page at a time, their events, segment members,
the watermark.

An export goal hands this module a `Selection`, which names properties and segments and holds no
SQL; `query` compiles it for the store's database (segments through `store.segments`), and
`pages` and `events_of` read what it selects. Pages are read by id (keyset) on the raw DB-API
cursor, so memory stays flat for millions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sftp_connector.config import models as config
from sftp_connector.store import models, queries, segments
from sftp_connector.store.db import Store
from sftp_connector.store.dialect import Dialect

PAGE = 50_000


@dataclass(frozen=True, slots=True)
class Selection:
    """Which profiles an export reads, and what of them, by property and segment names."""

    segments: dict[str, config.Condition]
    """Every segment connector.yaml defines, by name (a segment may name others)."""
    segment: str | None = None
    """The segment the profiles must be in; None: every profile."""
    consent: config.Condition | None = None
    """What the profiles must have consented to; None: no consent test."""
    changed_after: float | None = None
    """Only profiles (and events) changed after this time (the watermark of changed_only); None: all."""
    properties: tuple[str, ...] = ()
    """The properties to read, in column order (a property the store has never seen reads as null)."""
    holding: tuple[str, ...] | None = None
    """Only profiles that hold a value of one of these; None: no such test (an empty tuple: no profile)."""
    flags: tuple[str, ...] = ()
    """Segments to read one 0/1 flag of, in column order, after the properties."""


@dataclass(frozen=True, slots=True)
class Query:
    """A Selection compiled for one store's database: give it back to `pages` and `events_of`."""

    where: str
    chosen: str
    """The segment and consent tests alone (what the events of the exported profiles are chosen by)."""
    params: dict[str, Any]
    picks: list[str]
    dialect: Dialect
    changed_after: float | None


def query(store: Store, conn: Connection, selection: Selection) -> Query:
    """Given an export's selection, return its query on this store. Raise ConfigError for an unknown or
    circular segment."""
    columns = queries.property_expressions(conn)
    sql = segments.Sql(dialect=store.dialect, columns=columns, segments=selection.segments)
    tests = [sql.segment(selection.segment)] if selection.segment else []
    if selection.consent is not None:
        tests.append(segments.condition(sql, selection.consent))
    chosen = " AND ".join(tests) or "(1=1)"
    if selection.changed_after is not None:
        tests.append(f"p.updated_at > {sql.param(selection.changed_after)}")
    if selection.holding is not None:
        held = [f"{columns[p]} IS NOT NULL" for p in selection.holding if p in columns]
        tests.append(_any(held) if held else "(1=0)")
    picks = [columns.get(p, "NULL") for p in selection.properties]
    picks += [f"(CASE WHEN {sql.segment(name)} THEN 1 ELSE 0 END)" for name in selection.flags]
    return Query(" AND ".join(tests) or "(1=1)", chosen, sql.params, picks, store.dialect, selection.changed_after)


def _any(tests: list[str]) -> str:
    """The tests joined by OR as a balanced tree: SQLite refuses an expression deeper than 1,000."""
    if len(tests) <= 64:
        return "(" + " OR ".join(tests) + ")"
    half = len(tests) // 2
    return f"({_any(tests[:half])} OR {_any(tests[half:])})"


def count(conn: Connection, query: Query) -> int:
    """Given a compiled selection, return how many profiles it selects (for the progress display's total)."""
    rows = queries.fetch(conn, f"SELECT count(*) FROM profile p WHERE {query.where}", query.params)
    return int(rows[0][0])


def pages(conn: Connection, query: Query, schema: dict[str, Any], page: int = PAGE) -> Iterator[pl.DataFrame]:
    """Given a compiled selection and the schema of (id, properties…, flags…), yield its profiles in id order,
    a page at a time, as frames of that schema."""
    return profile_pages(conn, picks=query.picks, where=query.where, params=query.params, schema=schema, page=page)


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


def events_of(
    conn: Connection, query: Query, kind: str, *, since: str | None = None, since_days: float | None = None,
) -> list[tuple[Any, ...]]:
    """Given a compiled selection and an event type, return (profile_id, event_id, time, properties, nested)
    of the selected profiles' events of that type in time order: those changed after the selection's
    watermark, if it has one, and those at or after `since` (else since_days before now), if given."""
    if not since and since_days is not None:
        since = segments.cutoff(since_days, datetime.now(UTC))
    mark = query.dialect.placeholder
    params = {**query.params, "event_type": kind, "event_since": since or "", "event_after": query.changed_after or 0.0}
    where = f"e.type = {mark('event_type')} AND {query.chosen}"
    if query.changed_after is not None:
        where += f" AND e.updated_at > {mark('event_after')}"
    if since:
        where += f" AND e.time >= {mark('event_since')}"
    return queries.fetch(conn, "SELECT e.profile_id, e.event_id, e.time, e.properties, e.nested FROM event e "
                        f"JOIN profile p ON p.id = e.profile_id WHERE {where} ORDER BY e.time, e.id", params)


def members(store: Store, segment_conditions: dict[str, config.Condition], condition: config.Condition) -> list[int]:
    """Given the segments connector.yaml defines and a condition (or a segment, as {segment: name}), return the
    ids of the profiles it holds, in id order. Raise ConfigError for an unknown or circular segment."""
    with store.connection() as conn:
        sql = segments.Sql(dialect=store.dialect, columns=queries.property_expressions(conn),
                           segments=segment_conditions)
        where = segments.condition(sql, condition)
        found = profile_pages(conn, picks=[], where=where, params=sql.params, schema={"id": pl.Int64})
        return [pid for page in found for pid in page.get_column("id").to_list()]


def watermark(conn: Connection, goal: str) -> float | None:
    """Given an export goal, return its watermark, or None before its first successful export."""
    table = models.table_of(models.ExportState)
    return conn.execute(sa.select(table.c.watermark).where(table.c.goal == goal)).scalar()


def save_watermark(conn: Connection, goal: str, value: float, last_file: str, run: str) -> None:
    """Given an export goal and the time its successful export began reading, move its watermark there."""
    table = models.table_of(models.ExportState)
    values = {"watermark": value, "last_file": last_file, "run": run}
    if conn.execute(sa.update(table).where(table.c.goal == goal).values(**values)).rowcount == 0:
        conn.execute(sa.insert(table).values(goal=goal, **values))
