"""Write a batch's profile changes: new profiles (they get their ids here), the changed columns of stored
ones, and the identity index. The one place where the two databases write profiles differently.

The merge hands over frames that know no database (`ProfileChanges`). `stage` turns them into what
the database takes, on the merge's thread while the writer is busy with the batch before:
SQLite binds Python rows (building them is most of its cost, so it is done beside the writer),
PostgreSQL takes the frames by COPY. `Staged.write` then writes them on the writer's thread.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sftp_connector.errors import StoreError
from sftp_connector.store import layout
from sftp_connector.store.db import Store
from sftp_connector.store.queries import PROFILES, Entity, probing, table_routes


@dataclass(frozen=True, slots=True)
class ProfileChanges:
    """What one batch changes in profiles and the identity index. New profiles have placeholder ids -1, -2, …
    in the order they are to be stored; every frame naming them is given real ids by `real_ids`."""

    new: pl.DataFrame
    """New profiles: pid, created_at, updated_at (and type, for groups) and their property columns."""
    patches: list[pl.DataFrame]
    """Changed stored profiles: pid and the columns to write, one frame per set of columns."""
    releases: pl.DataFrame
    claims: pl.DataFrame
    """(property, value, profile_id): identity index changes of stored profiles."""
    fresh: pl.DataFrame
    """The values new profiles were found by that no stored profile claims (indexed without a conflict check)."""
    added: pl.DataFrame
    """The values the rules added to new profiles (indexed if no profile holds them)."""
    indexed: dict[str, str]
    """The identifier properties among the batch's, each with its column."""
    now: float


class Staged:
    """A batch's profile changes ready to write; `write` returns the ids the new profiles were given."""

    def write(self, store: Store, conn: Connection, entity: Entity) -> range:
        raise NotImplementedError


def stage(store: Store, changes: ProfileChanges) -> Staged:
    """Given a batch's profile changes, return them ready for the store's database to write."""
    return _SqliteRows.of(changes) if store.is_sqlite else _PostgresFrames(changes)


def real_ids(frame: pl.DataFrame, column: str, first: int) -> pl.DataFrame:
    """Given a frame, its id column and the id of new profile -1, return it with real ids (-n is first + n - 1)."""
    if not first or frame.is_empty():
        return frame
    return frame.with_columns(pl.when(pl.col(column) < 0).then(first - 1 - pl.col(column)).otherwise(pl.col(column))
                              .alias(column))


@dataclass(frozen=True, slots=True)
class _SqliteRows(Staged):
    """SQLite: new profiles appended without ids (SQLite numbers them on), their identifier values indexed from
    the rows just written (nothing travels row by row); patches and index changes bound row by row."""

    rows: Prepared
    patch_rows: list[Prepared]
    releases: pl.DataFrame
    claims: pl.DataFrame
    indexed: dict[str, str]

    @classmethod
    def of(cls, changes: ProfileChanges) -> _SqliteRows:
        now = changes.now
        return cls(prepared(changes.new.drop("pid", "created_at", "updated_at"), now),
                   [prepared(rows.rename({"pid": "id"}), now) for rows in changes.patches],
                   changes.releases, changes.claims, changes.indexed)

    def write(self, store: Store, conn: Connection, entity: Entity) -> range:
        first = append_profiles(store, conn, self.rows, entity)
        new_ids = range(first, first + len(self.rows.rows))
        for prepared in self.patch_rows:
            update_prepared(store, conn, prepared, entity)
        # Changed profiles first: they were stored before the batch, so they claim a value first.
        release_identities(store, conn, self.releases, entity)
        claim_identities(store, conn, self.claims, entity)
        if new_ids:
            for prop, column in self.indexed.items():
                claim_held_identities(store, conn, prop, column, (new_ids[0], new_ids[-1]), entity)
        return new_ids


@dataclass(frozen=True, slots=True)
class _PostgresFrames(Staged):
    """PostgreSQL: a block of ids reserved from the sequence, the frames sent by COPY; the values new profiles
    were found by are indexed without a conflict check (twice as fast)."""

    changes: ProfileChanges

    def write(self, store: Store, conn: Connection, entity: Entity) -> range:
        changes = self.changes
        reserved = reserve_profile_ids(conn, changes.new.height, entity)
        new_ids = range(reserved[0], reserved[0] + len(reserved)) if reserved else range(0)
        first = new_ids.start
        insert_profiles(store, conn, real_ids(changes.new, "pid", first).rename({"pid": "id"}), entity)
        for rows in changes.patches:
            update_profiles(store, conn, rows.rename({"pid": "id"}), changes.now, entity)
        # Changed profiles first: they were stored before the batch, so they claim a value first.
        release_identities(store, conn, changes.releases, entity)
        claim_identities(store, conn, changes.claims, entity)
        index_identities(store, conn, real_ids(changes.fresh, "profile_id", first), entity)
        claim_identities(store, conn, real_ids(changes.added, "profile_id", first), entity)
        return new_ids


# The SQL of profile writes, by operation: SQLite's take prepared rows, PostgreSQL's frames.


def reserve_profile_ids(conn: Connection, count: int, entity: Entity = PROFILES) -> list[int]:
    """Given a count, return that many new profile ids (PostgreSQL: SQLite's come with append_profiles)."""
    if count == 0:
        return []
    # Every allocation takes this lock, so a block of `count` ids can be claimed at once. It is
    # released with the transaction (never left held by an error); imports that create
    # profiles therefore commit one after another, as they do on SQLite.
    seq = entity.sequence
    conn.exec_driver_sql(f"CREATE SEQUENCE IF NOT EXISTS {seq}")
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock(hashtext('{seq}'))")
    first = conn.exec_driver_sql(f"SELECT nextval('{seq}')").scalar_one()
    conn.exec_driver_sql(f"SELECT setval('{seq}', {int(first) + int(count) - 1})")
    return list(range(first, first + count))


def insert_profiles(store: Store, conn: Connection, frame: pl.DataFrame, entity: Entity = PROFILES) -> None:
    """Given a frame (id, created_at, updated_at, property columns), insert new profiles (PostgreSQL)."""
    routes = table_routes(conn, entity, frame.columns)
    store.rows_into(conn, entity.table, frame.select(routes.pop(entity.table)))
    for table, columns in routes.items():  # a side table holds rows with a value only
        rows = frame.select("id", *columns).filter(pl.any_horizontal(pl.col(columns).is_not_null()))
        store.rows_into(conn, table, rows)


@dataclass(frozen=True, slots=True)
class Prepared:
    """Rows of a frame as DB-API parameters (SQLite), built on one thread to be bound on another: binding is
    all the writer then does per row. The first parameter of each row is the time it is written at."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def only(self, columns: list[str], *, lead: int = 1) -> Prepared:
        """Given some of the columns, return the rows with those (after the first `lead` parameters)."""
        at = [*range(lead), *(self.columns.index(c) + 1 for c in columns)]
        pick = operator.itemgetter(*at) if len(at) > 1 else lambda row: (row[at[0]],)
        return Prepared(columns, [pick(row) for row in self.rows])


def prepared(frame: pl.DataFrame, now: float) -> Prepared:
    """Given a frame, return its rows as parameters, each led by `now`."""
    # A few thousand rows at a time: building them holds the GIL, which the writer binding rows needs too.
    rows = frame.select(pl.lit(now, pl.Float64).alias("\x1fnow"), pl.all()).iter_rows(buffer_size=2048)
    return Prepared(frame.columns, list(rows))


def append_profiles(store: Store, conn: Connection, rows: Prepared, entity: Entity = PROFILES) -> int:
    """Given new profiles' columns as prepared rows (SQLite; `now` stamps them created and updated), insert them
    in order with consecutive new ids; return the first id.

    SQLite gives a row without an id the table's highest plus one, so the rows carry none. An
    erased profile's id is never given again: above an erased one, the first row is given its id.
    Raise StoreError if the ids did not come out consecutive.
    """
    if not rows.rows:
        return 0
    routes = table_routes(conn, entity, rows.columns)
    main = routes.pop(entity.table)
    first = _append_main(store, conn, rows.only(main) if routes else rows, entity)
    for table, columns in routes.items():  # a side table holds rows with a value only
        side = rows.only(columns, lead=0)
        values = ((first + n, *row) for n, row in enumerate(side.rows) if any(v is not None for v in row))
        store.executemany(conn, f"INSERT INTO {table} (id, {', '.join(columns)}) "
                                f"VALUES ({', '.join('?' * (len(columns) + 1))})", values)
    return first


def _append_main(store: Store, conn: Connection, rows: Prepared, entity: Entity) -> int:
    top, erased = conn.exec_driver_sql(f"SELECT COALESCE((SELECT MAX(id) FROM {entity.table}), 0), "
                                       "COALESCE((SELECT MAX(id) FROM erased_profile), 0)").one()
    first, todo = max(top, erased) + 1, iter(rows.rows)
    names = "".join(f", {c}" for c in rows.columns)
    marks = "".join(f", ?{n}" for n in range(2, len(rows.columns) + 2))
    if erased > top:
        store.executemany(conn, f"INSERT INTO {entity.table} (id, created_at, updated_at{names}) "
                                f"VALUES ({first}, ?1, ?1{marks})", [next(todo)])
    store.executemany(conn, f"INSERT INTO {entity.table} (created_at, updated_at{names}) VALUES (?1, ?1{marks})",
                      todo)
    last, wanted = conn.exec_driver_sql(f"SELECT MAX(id) FROM {entity.table}").scalar(), first + len(rows.rows) - 1
    if last != wanted:
        raise StoreError(f"new profiles' ids are not consecutive: up to {last}, not {first}..{wanted}")
    return first


def update_profiles(
    store: Store, conn: Connection, frame: pl.DataFrame, now: float, entity: Entity = PROFILES
) -> None:
    """Given a frame (id, property columns), write those columns of those profiles and stamp them updated."""
    if frame.is_empty():
        return
    if store.is_sqlite:
        update_prepared(store, conn, prepared(frame, now), entity)
        return
    for table, columns in table_routes(conn, entity, frame.columns[1:]).items():
        for chunk in layout.chunks(columns):
            if table != entity.table and not chunk:
                continue
            store.rows_into(conn, "profile_change", frame.select("id", *chunk), temp=True, analyze=True)
            with probing(conn):
                if table == entity.table:
                    sets = "".join(f"{c} = t.{c}, " for c in chunk)
                    conn.execute(sa.text(f"UPDATE {table} p SET {sets}updated_at = :now FROM profile_change t "
                                         "WHERE p.id = t.id"), {"now": now})
                else:
                    conn.exec_driver_sql(f"INSERT INTO {table} (id, {', '.join(chunk)}) SELECT id, "
                                         f"{', '.join(chunk)} FROM profile_change ON CONFLICT (id) DO UPDATE SET "
                                         + ", ".join(f"{c} = excluded.{c}" for c in chunk))


def update_prepared(store: Store, conn: Connection, rows: Prepared, entity: Entity = PROFILES) -> None:
    """Given prepared rows of (id, property columns) (SQLite), write those columns of those profiles and stamp
    them updated."""
    routes = table_routes(conn, entity, rows.columns[1:])
    main = routes.pop(entity.table)
    part = rows.only(main, lead=2) if routes else Prepared(rows.columns[1:], rows.rows)
    sets = "".join(f"{c} = ?{n}, " for n, c in enumerate(part.columns, start=3))
    store.executemany(conn, f"UPDATE {entity.table} SET {sets}updated_at = ?1 WHERE id = ?2", part.rows)
    for table, columns in routes.items():
        side = rows.only(columns, lead=2)
        store.executemany(conn, f"INSERT INTO {table} (id, {', '.join(columns)}) VALUES "
                                f"({', '.join(f'?{n}' for n in range(2, len(columns) + 3))}) ON CONFLICT (id) DO "
                                "UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns), side.rows)


def claim_identities(store: Store, conn: Connection, frame: pl.DataFrame, entity: Entity = PROFILES) -> None:
    """Given (property, value, profile_id) rows, index them; a value already held keeps its profile."""
    _identity_change(store, conn, frame, f"INSERT INTO {entity.identity} (property, value, profile_id) {{rows}} "
                                         "ON CONFLICT (property, value) DO NOTHING")


def index_identities(store: Store, conn: Connection, frame: pl.DataFrame, entity: Entity = PROFILES) -> None:
    """Given (property, value, profile_id) rows whose values no profile holds, index them.

    No conflict check: a value held after all (another import claimed it meanwhile) fails
    the transaction, and the file is retried.
    """
    store.rows_into(conn, entity.identity, frame.select("property", "value", "profile_id"))


def claim_held_identities(
    store: Store, conn: Connection, prop: str, column: str, ids: tuple[int, int], entity: Entity = PROFILES
) -> None:
    """Given an identifier property, its column and a range of profile ids just inserted (SQLite), index the
    values those profiles hold as claim_identities would: in value order, the lowest id winning.

    Nothing travels row by row: SQLite reads the values from the rows it has just written.
    (PostgreSQL does this markedly slower than claim_identities' COPY.)
    """
    [table] = [t for t, columns in table_routes(conn, entity, [column]).items() if columns]
    conn.execute(sa.text(
        f"INSERT INTO {entity.identity} (property, value, profile_id) SELECT :prop, j.value, p.id "
        f"FROM {table} p, json_each(p.{column}) j WHERE p.id BETWEEN :first AND :last "
        f"AND p.{column} IS NOT NULL ORDER BY j.value, p.id ON CONFLICT (property, value) DO NOTHING"),
        {"prop": prop, "first": ids[0], "last": ids[1]})


def release_identities(store: Store, conn: Connection, frame: pl.DataFrame, entity: Entity = PROFILES) -> None:
    """Given (property, value, profile_id) rows, drop them from the index where that profile holds them."""
    if store.is_sqlite:
        store.executemany(conn, f"DELETE FROM {entity.identity} WHERE property = ? AND value = ? AND profile_id = ?",
                          frame.iter_rows())
        return
    _identity_change(store, conn, frame, f"DELETE FROM {entity.identity} i USING ({{rows}}) t "
                                         "WHERE i.property = t.property AND i.value = t.value "
                                         "AND i.profile_id = t.profile_id")


def _identity_change(store: Store, conn: Connection, frame: pl.DataFrame, sql: str) -> None:
    if frame.is_empty():
        return
    if store.is_sqlite:
        store.executemany(conn, sql.format(rows="VALUES (?, ?, ?)"), frame.iter_rows())
        return
    store.rows_into(conn, "identity_change", frame, temp=True)
    conn.exec_driver_sql(sql.format(rows="SELECT property, value, profile_id FROM identity_change"))
