"""Queries on the profile store, used by merge, the goals and the CLI dumps.

Every function takes the Store and an open Connection: the caller owns the transaction.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sftp_connector import rowkeys
from sftp_connector.config.models import group_identity_property
from sftp_connector.store import layout, models
from sftp_connector.store.db import Store
from sftp_connector.store.dialect import driver_connection


@dataclass(frozen=True, slots=True)
class Entity:
    """Where one kind of merged record lives: profiles, or groups laid out the same way."""

    table: str
    columns: Any
    """The SQLModel table naming each property's column."""
    identity: str
    sequence: str


PROFILES = Entity("profile", models.PropertyColumn, "identity", "profile_id_seq")
GROUPS = Entity("group_entity", models.GroupPropertyColumn, "group_identity", "group_id_seq")


def has_identities(conn: Connection, prop: str, entity: Entity = PROFILES) -> bool:
    """Given an identifier property, return True if any profile holds a value of it."""
    sql = f"SELECT 1 FROM {entity.identity} WHERE property = :p LIMIT 1"
    return conn.execute(sa.text(sql), {"p": prop}).first() is not None


def find_identities(
    store: Store, conn: Connection, prop: str, values: pl.Series, entity: Entity = PROFILES,
    columns: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Given an identifier property and values, return (value, pid) for the values some profile holds.

    With {property: column}, also those profiles' values as property_values returns them: one
    join instead of two round trips.
    """
    empty = pl.DataFrame(schema={"value": pl.String, "pid": pl.Int64, **dict.fromkeys(columns or {}, pl.String)})
    values = values.drop_nulls().unique()
    if values.is_empty() or not has_identities(conn, prop, entity):
        return empty
    # The main table's columns come with the lookup; any others (side tables) by a second read.
    joined = set(table_routes(conn, entity, (columns or {}).values())[entity.table][:layout.CHUNK])
    picked = {p: c for p, c in (columns or {}).items() if c in joined}
    found = _identities(store, conn, prop, values, entity, picked)
    rest = {p: c for p, c in (columns or {}).items() if c not in joined}
    if not rest:
        return found
    if found.is_empty():
        return empty
    rest_values = property_values(store, conn, found.get_column("pid"), rest, entity)
    return found.join(rest_values, on="pid", how="left").select(empty.columns)


def _identities(
    store: Store, conn: Connection, prop: str, values: pl.Series, entity: Entity, columns: dict[str, str]
) -> pl.DataFrame:
    """find_identities for columns of the main table only."""
    empty = pl.DataFrame(schema={"value": pl.String, "pid": pl.Int64, **dict.fromkeys(columns, pl.String)})
    if store.is_sqlite:
        # The values travel as one JSON array, each looked up in the index; what comes back is the
        # position in the array, the profile id and its columns, as property_values returns them.
        cells = " || char(31) || ".join(["j.key", "i.profile_id",
                                          *(f"ifnull(p.{c}, char(21))" for c in columns.values())])
        profiles = f" CROSS JOIN {entity.table} p ON p.id = i.profile_id" if columns else ""
        sql = (f"SELECT group_concat({cells}, char(30)) FROM json_each(?) j "
               f"CROSS JOIN {entity.identity} i ON i.property = ? AND i.value = j.value{profiles}")
        schema = {"at": pl.Int64, "pid": pl.Int64, **dict.fromkeys(columns, pl.String)}
        found = []
        for start in range(0, values.len(), 100_000):
            chunk = values.slice(start, 100_000)
            rows = _split_rows(fetch(conn, sql, (orjson.dumps(chunk.to_list()).decode(), prop))[0][0], schema)
            found.append(rows.with_columns(value=chunk.gather(rows.get_column("at"))).select(empty.columns))
        return pl.concat(found)
    # An analyzed scratch table, sorted so that the index probes walk the index in order; COLLATE "C" as the
    # index has it.
    store.rows_into(conn, "wanted_value", values.sort().alias("value").to_frame(), temp=True, analyze=True)
    picks = "".join(f", p.{column}" for column in columns.values())
    profiles = f" JOIN {entity.table} p ON p.id = i.profile_id" if columns else ""
    with probing(conn):
        return store.frame(conn, f"SELECT i.value, i.profile_id{picks} FROM wanted_value w JOIN {entity.identity} "
                                 f"i ON i.property = %s AND i.value = w.value COLLATE \"C\"{profiles}", empty.schema,
                           (prop,))


def table_routes(conn: Connection, entity: Entity, columns: Any) -> dict[str, list[str]]:
    """Given column names, return {table: its columns among them}, the main table first (perhaps empty)."""
    return layout.tables_of(conn, entity.columns, entity.table, columns)


def property_columns(
    store: Store, conn: Connection, props: Sequence[str], entity: Entity = PROFILES
) -> dict[str, str]:
    """Given property names, return the column of each, adding columns for new properties (in the main table
    or side tables: see layout.add_columns)."""
    table = entity.columns.__table__
    query = sa.select(table.c.name, table.c.column)
    known = dict(conn.execute(query.where(table.c.name.in_(props)) if len(props) <= 500 else query).all())
    new = [prop for prop in dict.fromkeys(props) if prop not in known]
    if new:
        known.update(layout.add_columns(conn, entity.columns, entity.table, new, sqlite=store.is_sqlite))
    return {prop: known[prop] for prop in props}


def all_property_columns(conn: Connection, entity: Entity = PROFILES) -> dict[str, str]:
    """Return every property's column."""
    table = entity.columns.__table__
    return dict(conn.execute(sa.select(table.c.name, table.c.column)).all())


def property_expressions(conn: Connection, entity: Entity = PROFILES) -> dict[str, str]:
    """Return every property's cell as an SQL expression over its main table aliased `p` (segments, exports)."""
    return layout.expressions(conn, entity.columns, entity.table)


def property_values(
    store: Store, conn: Connection, ids: pl.Series, columns: dict[str, str], entity: Entity = PROFILES
) -> pl.DataFrame:
    """Given profile ids and {property: column}, return pid and each property's JSON array text (null: none),
    for the ids of stored profiles."""
    schema = {"pid": pl.Int64, **dict.fromkeys(columns, pl.String)}
    if ids.is_empty():
        return pl.DataFrame(schema=schema)
    ids = ids.unique()
    if not store.is_sqlite:
        store.rows_into(conn, "wanted_profile", ids.alias("id").to_frame(), temp=True, analyze=True)
    wanted = orjson.dumps(ids.to_list()).decode() if store.is_sqlite else ""
    prop_of = {column: prop for prop, column in columns.items()}
    frame: pl.DataFrame | None = None
    for table, names in table_routes(conn, entity, columns.values()).items():
        for chunk in layout.chunks(names):
            if chunk or frame is None:  # the main table says which profiles exist, with no columns too
                part = _values_of(store, conn, table, wanted, {prop_of[c]: c for c in chunk})
                frame = part if frame is None else frame.join(part, on="pid", how="left")
    assert frame is not None
    return frame.select(list(schema))


def _values_of(store: Store, conn: Connection, table: str, wanted: str, columns: dict[str, str]) -> pl.DataFrame:
    """Given a table, the ids (SQLite: their JSON array; PostgreSQL: in wanted_profile) and {property: column}
    of that table, return pid and each property's cell of the rows the table holds."""
    schema: dict[str, pl.DataType] = {"pid": pl.Int64(), **{name: pl.String() for name in columns}}
    if store.is_sqlite:
        # JSON text never holds a raw control character: the rows come back as one string, cells
        # split by \x1f, rows by \x1e, \x15 for NULL, and polars splits it (no Python object per value).
        cells = " || char(31) || ".join(["p.id", *(f"ifnull(p.{c}, char(21))" for c in columns.values())])
        sql = f"SELECT group_concat({cells}, char(30)) FROM json_each(?) w CROSS JOIN {table} p ON p.id = w.value"
        return _split_rows(fetch(conn, sql, (wanted,))[0][0], schema)
    picks = "".join(f", p.{column}" for column in columns.values())
    return store.frame(conn, f"SELECT p.id{picks} FROM wanted_profile w JOIN {table} p ON p.id = w.id", schema)


def _split_rows(text: str | None, schema: dict[str, Any]) -> pl.DataFrame:
    """Given SQLite rows as one string (cells split by \\x1f, rows by \\x1e, \\x15 for NULL) and the
    schema of their columns, return them as a frame."""
    if not text:
        return pl.DataFrame(schema=schema)
    cells = pl.Series([text]).str.split("\x1e").explode().str.split_exact("\x1f", len(schema) - 1).struct.unnest()
    cells.columns = list(schema)
    return cells.select(pl.when(pl.col(name) != "\x15").then(pl.col(name)).cast(dtype).alias(name)
                        for name, dtype in schema.items())


def fetch(conn: Connection, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
    """Run a query on the raw DB-API cursor: much faster than result objects for a million rows."""
    cursor = driver_connection(conn).cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def pages(
    conn: Connection, select: str, *, where: str = "", params: dict[str, Any] | None = None, key: str = "id",
    page: int = 10_000,
) -> Iterator[list[tuple[Any, ...]]]:
    """Given `SELECT <key>, … FROM …` (the integer key first), an optional WHERE expression and its
    parameters, yield the rows in key order, a page at a time.

    Each page starts after the last key of the one before (no OFFSET: every page costs the same).
    """
    last = 0
    extra = f" AND ({where})" if where else ""
    while True:
        rows = fetch(conn, f"{select} WHERE {key} > {int(last)}{extra} ORDER BY {key} LIMIT {int(page)}", params or {})
        if rows:
            yield rows
        if len(rows) < page:
            return
        last = rows[-1][0]


@contextlib.contextmanager
def probing(conn: Connection) -> Iterator[None]:
    """Join a batch (an analyzed scratch table) to a large table by index probes (PostgreSQL): a hash join
    would read the whole table for every batch, and a merge join most of its index.

    Not reset on an error: that aborts the transaction, and SET LOCAL ends with it.
    """
    conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
    conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")
    yield
    conn.exec_driver_sql("RESET enable_hashjoin")
    conn.exec_driver_sql("RESET enable_mergejoin")


def reader_beside_writer(store: Store) -> Connection | None:
    """Return a connection that reads beside a write in progress on another, seeing the store as last committed;
    None where the database cannot (SQLite outside WAL mode, an in-memory store)."""
    conn = store.engine.connect().execution_options(reads_only=True)
    if store.is_sqlite and conn.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
        conn.close()
        return None
    return conn


def imported_files(conn: Connection, goal: str) -> dict[str, models.ImportedFile]:
    """Given a goal, return the record of the last import of each of its files, by remote path."""
    table = models.table_of(models.ImportedFile)
    rows = conn.execute(sa.select(table).where(table.c.goal == goal)).mappings()
    # Rows of the store's own table need no validation (thousands of files: construct them directly).
    return {row["path"]: models.ImportedFile.model_construct(**row) for row in rows}


def save_imported_file(conn: Connection, record: models.ImportedFile) -> int:
    """Given a file record, insert or replace it for its (goal, path); return its id."""
    table = models.table_of(models.ImportedFile)
    values = record.model_dump(exclude={"id"})
    existing = conn.execute(
        sa.select(table.c.id).where(table.c.goal == record.goal, table.c.path == record.path)
    ).scalar()
    if existing is None:
        key = conn.execute(sa.insert(table).values(**values)).inserted_primary_key
        assert key is not None
        return int(key[0])
    conn.execute(sa.update(table).where(table.c.id == existing).values(**values))
    return int(existing)


def imported_rows(conn: Connection, file_id: int) -> pl.DataFrame | None:
    """Given a file record id, return its remembered rows, every blob's in order (a later row replaces an
    earlier one with the same key), or None if there are none."""
    table = models.table_of(models.ImportedRows)
    blobs = conn.execute(sa.select(table.c.data).where(table.c.file_id == file_id).order_by(table.c.seq)).scalars()
    frames = [pl.read_ipc(io.BytesIO(blob)) for blob in blobs]
    if not frames:
        return None
    rows = pl.concat(frames)
    erased = pl.Series([r[0] for r in conn.execute(sa.text("SELECT id FROM erased_profile"))], dtype=pl.Int64)
    # A row applied to an erased profile is forgotten: the file mentioning it again makes a new profile.
    return rows.filter(~pl.col("profile_id").is_in(erased.implode())) if erased.len() else rows


def append_rows(conn: Connection, file_id: int, frame: pl.DataFrame) -> None:
    """Given a file record id and applied rows (key, hash, profile_id, sums), remember them as one more blob."""
    if frame.is_empty():
        return
    table = models.table_of(models.ImportedRows)
    seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.seq), 0)).where(table.c.file_id == file_id)
                       ).scalar_one() + 1
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="zstd")
    conn.execute(sa.insert(table).values(file_id=file_id, seq=seq, data=buffer.getvalue()))


def remember_goal_profiles(conn: Connection, goal: str, ids: pl.Series) -> None:
    """Given a goal and profile ids it touched, add them to the goal's set of profiles."""
    table = models.table_of(models.GoalProfiles)
    blob = conn.execute(sa.select(table.c.data).where(table.c.goal == goal)).scalar()
    known = pl.read_ipc(io.BytesIO(blob)).to_series() if blob is not None else pl.Series("id", [], pl.Int64)
    merged = rowkeys.merge_sorted(known.cast(pl.Int64), ids, distinct=True)
    buffer = io.BytesIO()
    merged.to_frame().write_ipc(buffer, compression="zstd")
    values = {"count": merged.len(), "data": buffer.getvalue()}
    if blob is None:
        conn.execute(sa.insert(table).values(goal=goal, **values))
    else:
        conn.execute(sa.update(table).where(table.c.goal == goal).values(**values))


def goal_profiles(conn: Connection, goal: str) -> pl.Series:
    """Given a goal, return the ids of every profile it has exchanged."""
    table = models.table_of(models.GoalProfiles)
    blob = conn.execute(sa.select(table.c.data).where(table.c.goal == goal)).scalar()
    return pl.read_ipc(io.BytesIO(blob)).to_series() if blob is not None else pl.Series("id", [], pl.Int64)


def goal_profile_count(conn: Connection, goal: str) -> int:
    """Given a goal, return how many distinct profiles it has exchanged."""
    table = models.table_of(models.GoalProfiles)
    return int(conn.execute(sa.select(table.c.count).where(table.c.goal == goal)).scalar() or 0)


def iter_profiles(conn: Connection, batch: int = 10_000, *, only: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield every profile (or only the one with id `only`) as a dict (id, properties, groups, created_at,
    updated_at), in id order.
    """
    where = f"id = {int(only)}" if only is not None else ""
    for rows in _records(conn, PROFILES, where=where, batch=batch):
        links: dict[int, dict[str, list[str]]] = {}
        for pid, kind, key in fetch(conn, "SELECT profile_id, type, key FROM profile_group WHERE profile_id "
                                           f"BETWEEN {int(rows[0][0][0])} AND {int(rows[-1][0][0])} "
                                           "ORDER BY profile_id, type, key"):
            links.setdefault(pid, {}).setdefault(kind, []).append(key)
        for (pid, created, updated), properties in rows:
            yield {"id": pid, "properties": properties, "created_at": created, "updated_at": updated,
                   "groups": links.get(pid, {})}


def iter_groups(conn: Connection, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """Yield every group as a dict (type, id: its identifier value, properties, created_at, updated_at)."""
    for rows in _records(conn, GROUPS, extra=["type"], batch=batch):
        for (_, created, updated, kind), properties in rows:
            key = properties.pop(group_identity_property(kind), [None])[0]
            yield {"type": kind, "id": key, "properties": properties, "created_at": created, "updated_at": updated}


def _records(
    conn: Connection, entity: Entity, *, extra: Sequence[str] = (), where: str = "", batch: int
) -> Iterator[list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Yield pages of an entity's records in id order: ((id, created_at, updated_at, *extra), properties)."""
    routes: dict[str, list[tuple[str, str]]] = {entity.table: []}
    for name, (column, table) in layout.catalog(conn, entity.columns).items():
        routes.setdefault(table, []).append((name, column))
    main = routes.pop(entity.table)
    lead = ["id", "created_at", "updated_at", *extra]
    select = f"SELECT {', '.join(lead + [c for _, c in main])} FROM {entity.table}"
    for rows in pages(conn, select, where=where, page=batch):
        found = {row[0]: _decoded(main, row[len(lead):]) for row in rows}
        for table, columns in routes.items():
            sql = (f"SELECT id, {', '.join(c for _, c in columns)} FROM {table} "
                   f"WHERE id BETWEEN {int(rows[0][0])} AND {int(rows[-1][0])}")
            for row in fetch(conn, sql):
                if row[0] in found:
                    found[row[0]].update(_decoded(columns, row[1:]))
        yield [(row[:len(lead)], found[row[0]]) for row in rows]


def _decoded(columns: list[tuple[str, str]], cells: Sequence[Any]) -> dict[str, Any]:
    return {name: orjson.loads(text) for (name, _), text in zip(columns, cells, strict=True) if text is not None}


def profile_by(conn: Connection, prop: str, value: str) -> dict[str, Any] | None:
    """Given a property and value, return the profile holding it, or None.

    Identifier properties are found through the index; any other property by a scan.
    """
    pid = _identified(conn, prop, value)
    if pid is not None:
        return next(iter_profiles(conn, only=pid), None)
    for profile in iter_profiles(conn):
        if value in map(str, profile["properties"].get(prop, [])):
            return profile
    return None


def profile_by_identifier(conn: Connection, value: str, properties: Sequence[str]) -> dict[str, Any] | None:
    """Given a value and the identifier properties to try (in order), return the first profile holding it
    under one of them, or None. Each try is one probe of the identity index."""
    for prop in properties:
        pid = _identified(conn, prop, value)
        if pid is not None:
            return next(iter_profiles(conn, only=pid), None)
    return None


def _identified(conn: Connection, prop: str, value: str) -> int | None:
    """The profile holding an identifier property's value, through the identity index; None if none does."""
    pid = conn.execute(sa.text("SELECT profile_id FROM identity WHERE property = :p AND value = :v"),
                       {"p": prop, "v": value}).scalar()
    return None if pid is None else int(pid)


def events_of(conn: Connection, profile_id: int, *, limit: int) -> list[dict[str, Any]]:
    """Given a profile, return its newest `limit` timeline events (by time, then storage order)."""
    rows = conn.execute(sa.text("SELECT type, event_id, time, properties, nested FROM event WHERE profile_id = :p "
                                "ORDER BY time DESC, id DESC LIMIT :n"), {"p": profile_id, "n": limit}).all()
    return [{"type": kind, "id": event_id, "time": time, "properties": orjson.loads(properties),
             "nested": orjson.loads(nested)} for kind, event_id, time, properties, nested in rows]


# ── group links, events, products ─────────────────────────────────────────────────────


def link_groups(store: Store, conn: Connection, links: pl.DataFrame, *, replace: bool, goal: str) -> None:
    """Given (profile_id, type, key) rows, link those profiles to those groups on behalf of the goal.

    With replace, each named profile's earlier links of the named types are dropped first.
    """
    if links.is_empty():
        return
    if replace:
        gone = links.select("profile_id", "type").unique()
        if store.is_sqlite:
            store.executemany(conn, "DELETE FROM profile_group WHERE profile_id = ? AND type = ?", gone.iter_rows())
        else:
            store.rows_into(conn, "link_change", gone, temp=True)
            conn.exec_driver_sql("DELETE FROM profile_group g USING link_change t "
                                 "WHERE g.profile_id = t.profile_id AND g.type = t.type")
    rows = links.select("profile_id", "type", "key").unique().with_columns(goal=pl.lit(goal))
    if store.is_sqlite:
        store.executemany(conn, "INSERT INTO profile_group (profile_id, type, key, goal) VALUES (?, ?, ?, ?) "
                                "ON CONFLICT DO NOTHING", rows.iter_rows())
        return
    store.rows_into(conn, "link_new", rows, temp=True)
    conn.exec_driver_sql("INSERT INTO profile_group (profile_id, type, key, goal) SELECT profile_id, type, key, goal "
                         "FROM link_new ON CONFLICT DO NOTHING")


def iter_events(conn: Connection, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """Yield every event as a dict (profile_id, type, id, time, properties, nested), in storage order."""
    for rows in pages(conn, "SELECT id, profile_id, type, event_id, time, properties, nested FROM event",
                      page=batch):
        for _, pid, kind, event_id, time, properties, nested in rows:
            yield {"profile_id": pid, "type": kind, "id": event_id, "time": time,
                   "properties": orjson.loads(properties), "nested": orjson.loads(nested)}


def iter_products(conn: Connection) -> Iterator[dict[str, Any]]:
    """Yield every product (sku, times_bought, last_bought), by sku."""
    for sku, times, last in fetch(conn, "SELECT sku, times_bought, last_bought FROM product ORDER BY sku"):
        yield {"sku": sku, "times_bought": times, "last_bought": last or None}
