"""Write a batch's profile changes: new profiles (they get their ids here), the changed columns of stored
ones, and the identity index. The one place where the two databases write profiles differently.

The merge hands over frames that know no database (`ProfileChanges`). `stage` turns them into what
the database takes, on the merge's thread while the writer is busy with the batch before:
SQLite binds Python rows (building them is most of its cost, so it is done beside the writer),
PostgreSQL takes the frames by COPY. `Staged.write` then writes them on the writer's thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector.store import queries
from sftp_connector.store.db import Store


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

    def write(self, store: Store, conn: Connection, entity: queries.Entity) -> range:
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

    rows: queries.Prepared
    patch_rows: list[queries.Prepared]
    releases: pl.DataFrame
    claims: pl.DataFrame
    indexed: dict[str, str]

    @classmethod
    def of(cls, changes: ProfileChanges) -> _SqliteRows:
        now = changes.now
        return cls(queries.prepared(changes.new.drop("pid", "created_at", "updated_at"), now),
                   [queries.prepared(rows.rename({"pid": "id"}), now) for rows in changes.patches],
                   changes.releases, changes.claims, changes.indexed)

    def write(self, store: Store, conn: Connection, entity: queries.Entity) -> range:
        first = queries.append_profiles(store, conn, self.rows, entity)
        new_ids = range(first, first + len(self.rows.rows))
        for prepared in self.patch_rows:
            queries.update_prepared(store, conn, prepared, entity)
        # Changed profiles first: they were stored before the batch, so they claim a value first.
        queries.release_identities(store, conn, self.releases, entity)
        queries.claim_identities(store, conn, self.claims, entity)
        if new_ids:
            for prop, column in self.indexed.items():
                queries.claim_held_identities(store, conn, prop, column, (new_ids[0], new_ids[-1]), entity)
        return new_ids


@dataclass(frozen=True, slots=True)
class _PostgresFrames(Staged):
    """PostgreSQL: a block of ids reserved from the sequence, the frames sent by COPY; the values new profiles
    were found by are indexed without a conflict check (twice as fast)."""

    changes: ProfileChanges

    def write(self, store: Store, conn: Connection, entity: queries.Entity) -> range:
        changes = self.changes
        reserved = queries.reserve_profile_ids(conn, changes.new.height, entity)
        new_ids = range(reserved[0], reserved[0] + len(reserved)) if reserved else range(0)
        first = new_ids.start
        queries.insert_profiles(store, conn, real_ids(changes.new, "pid", first).rename({"pid": "id"}), entity)
        for rows in changes.patches:
            queries.update_profiles(store, conn, rows.rename({"pid": "id"}), changes.now, entity)
        # Changed profiles first: they were stored before the batch, so they claim a value first.
        queries.release_identities(store, conn, changes.releases, entity)
        queries.claim_identities(store, conn, changes.claims, entity)
        queries.index_identities(store, conn, real_ids(changes.fresh, "profile_id", first), entity)
        queries.claim_identities(store, conn, real_ids(changes.added, "profile_id", first), entity)
        return new_ids
