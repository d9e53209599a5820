"""Where property columns live: the entity's main table, then side tables of bounded width.

Columns are named p_1, p_2, … across all of an entity's tables, so a column's name alone
says which property it is; the catalog (`property_column` / `group_property_column`) says
which table holds it (`tbl`). `profile` takes new properties while it has room for all of a
file's new ones, up to WIDTH (columns of an older store all stay where they are); others
go to `profile_x1`, `profile_x2`, … (id, then up to WIDTH TEXT columns), made as
properties appear. A side table's row may be absent: its columns are then all NULL.

WIDTH keeps a PostgreSQL row within its 8160 bytes whatever the values (a cell longer than
24 bytes is moved out of line, 18 bytes left in the row), and every statement here reads or
writes at most CHUNK columns, below SQLite's 2,000 result columns and 1,000-deep
expressions and PostgreSQL's 1,664 select-list entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

WIDTH = 250
CHUNK = 250


def side_table(main: str, number: int) -> str:
    """The name of a main table's side table number `number` (1, 2, …)."""
    return f"{main}_x{number}"


def catalog(conn: Connection, columns_model: Any) -> dict[str, tuple[str, str]]:
    """Given a catalog table's model, return every property's (column, table), in column order."""
    table = columns_model.__table__
    in_order = sa.select(table.c.name, table.c.column, table.c.tbl).order_by(sa.func.length(table.c.column),
                                                                             table.c.column)
    return {name: (column, tbl) for name, column, tbl in conn.execute(in_order)}


def tables_of(conn: Connection, columns_model: Any, main: str, columns: Iterable[str]) -> dict[str, list[str]]:
    """Given column names, return {table: its columns among them, in the order given}, the main table first
    (always there, perhaps empty). A name the catalog does not know (id, type, …) is the main table's."""
    wanted = list(columns)
    routes: dict[str, list[str]] = {main: []}
    props = [c for c in wanted if c.startswith("p_")]
    where = _tables(conn, columns_model, props) if props else {}
    for column in wanted:
        routes.setdefault(where.get(column, main), []).append(column)
    return routes


def _tables(conn: Connection, columns_model: Any, columns: list[str]) -> dict[str, str]:
    table = columns_model.__table__
    query = sa.select(table.c.column, table.c.tbl)
    if len(columns) <= 500:  # few columns (the common case): the catalog's index, not all of it
        return dict(conn.execute(query.where(table.c.column.in_(columns))).all())
    return dict(conn.execute(query).all())


def chunks(columns: list[str], size: int = CHUNK) -> Iterator[list[str]]:
    """Given columns, yield them in runs of at most `size` (one empty run for none)."""
    if not columns:
        yield []
    for start in range(0, len(columns), size):
        yield columns[start:start + size]


def add_columns(
    conn: Connection, columns_model: Any, main: str, props: list[str], *, sqlite: bool
) -> dict[str, str]:
    """Given properties the catalog does not hold yet, give each a new column; return {property: column}.

    They go together to the main table if it has room for all of them, else to the last side
    table if it has, else to new side tables: a goal's properties stay in one table, and the
    main table (written for every profile) stays narrow, a wide file's properties never
    filling it (SQLite writes a byte per column of a row, NULL or not). A new side table is
    created with all its columns at once (thousands of ALTER TABLEs would each rewrite
    SQLite's schema).
    """
    table = columns_model.__table__
    widths: dict[str, int] = {tbl: count for tbl, count in conn.execute(
        sa.select(table.c.tbl, sa.func.count()).group_by(table.c.tbl)).all()}
    count = sum(widths.values())
    sides = sorted((t for t in widths if t != main), key=lambda t: int(t.rsplit("_x", 1)[1]))
    number = int(sides[-1].rsplit("_x", 1)[1]) if sides else 0
    target: str | None = next((t for t in [main, *sides[-1:]] if len(props) <= WIDTH - widths.get(t, 0)), None)
    placed: list[tuple[str, str, str]] = []
    for start in range(0, len(props) if target is None else 0, WIDTH):
        number += 1
        name = side_table(main, number)
        batch = props[start:start + WIDTH]
        columns = [f"p_{count + n}" for n in range(1, len(batch) + 1)]
        count += len(batch)
        key = "id INTEGER PRIMARY KEY" if sqlite else "id BIGINT PRIMARY KEY"
        conn.exec_driver_sql(f"CREATE TABLE {name} ({key}, {', '.join(c + ' TEXT' for c in columns)})")
        placed += [(prop, column, name) for prop, column in zip(batch, columns, strict=True)]
    for prop in props if target is not None else []:
        assert target is not None
        count += 1
        conn.exec_driver_sql(f"ALTER TABLE {target} ADD COLUMN p_{count} TEXT")
        placed.append((prop, f"p_{count}", target))
    conn.execute(sa.insert(table), [{"name": p, "column": c, "tbl": t} for p, c, t in placed])
    return {prop: column for prop, column, _ in placed}


def side_tables(conn: Connection, columns_model: Any, main: str) -> list[str]:
    """Given a catalog table's model and its main table, return the side tables it names."""
    table = columns_model.__table__
    return sorted(t for (t,) in conn.execute(sa.select(table.c.tbl).distinct()) if t != main)


def expressions(conn: Connection, columns_model: Any, main: str, alias: str = "p") -> dict[str, str]:
    """Given a catalog table's model and its main table (aliased `alias` in the query), return each
    property's cell as an SQL expression: the main table's column, or a side table's by a correlated
    subquery (NULL when the side row is absent; no join, so no limit on how many tables one query reads)."""
    found = {}
    for name, (column, tbl) in catalog(conn, columns_model).items():
        if tbl == main:
            found[name] = f"{alias}.{column}"
        else:
            short = "x" + tbl.rsplit("_x", 1)[1]
            found[name] = f"(SELECT {short}.{column} FROM {tbl} {short} WHERE {short}.id = {alias}.id)"
    return found
