"""Engine, schema and transactions for SQLite (embedded default) and PostgreSQL.

Bulk writes go straight to the DB-API cursor (`executemany`) inside the SQLAlchemy
transaction: an ORM object per row would be many times slower for million-row files.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy import event, orm
from sqlalchemy.engine import Connection, Engine

from sftp_connector.errors import ConfigError, StoreError
from sftp_connector.private import private_file
from sftp_connector.store import migrate
from sftp_connector.store.dialect import dialect_for, driver_connection

logger = logging.getLogger(__name__)

BATCH = 50_000


class Store:
    """A connected profile store: the engine and what differs between the two databases."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.dialect = dialect_for(engine)
        database = engine.url.database if self.is_sqlite else None
        self._folder = Path(database).resolve().parent if database and database != ":memory:" else None

    @contextmanager
    def transaction(self, *, rollback: bool = False) -> Iterator[Connection]:
        """Yield a connection inside one transaction; commit on success (or roll back, for a dry run).

        Roll back on error. Raise StoreError if the database fails; a ConnectorError from the
        body passes through.
        """
        try:
            with self.engine.connect() as conn, conn.begin() as transaction:
                yield conn
                if rollback:
                    transaction.rollback()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"database error, nothing was written: {self.cause(exc)}") from exc

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Yield a connection for reads, outside a transaction. Raise StoreError if the database fails
        (unavailable, connection lost); a ConnectorError from the body passes through."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"database error: {self.cause(exc)}") from exc

    def _at_file_size_limit(self) -> bool:
        """True if this process has a file size limit (ulimit -f) and a store file (or its WAL) has reached it."""
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit == resource.RLIM_INFINITY or self._folder is None:
            return False
        name = Path(str(self.engine.url.database)).name
        return any(p.stat().st_size >= limit - _LOW_SPACE for p in self._folder.glob(f"{name}*") if p.is_file())

    def cause(self, exc: Exception) -> str:
        """Given a database error, return its cause in words an operator can act on. SQLite reports a full
        disk as "database or disk is full" or "disk I/O error" (which a failing disk gives too): when the
        store's folder has no room left, or this process may write no larger file, say that, and where."""
        said = _short(exc)
        if self._folder is None or said not in ("database or disk is full", "disk I/O error"):
            return said
        if self._at_file_size_limit():
            return f"{os.strerror(errno.EFBIG).lower()} in {self._folder} (the process's file size limit)"
        try:
            free = shutil.disk_usage(self._folder).free
        except OSError:
            return said
        return f"{os.strerror(errno.ENOSPC).lower()} in {self._folder}" if free < _LOW_SPACE else said

    def executemany(self, conn: Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Given SQL with `?` placeholders, run it for every row through the raw DB-API cursor."""
        if not self.is_sqlite:
            sql = sql.replace("?", "%s")
        cursor = driver_connection(conn).cursor()
        try:
            if self.is_sqlite:
                cursor.executemany(sql, rows)  # sqlite3 streams an iterator: no list is built
            else:
                for chunk in _chunks(rows, BATCH):
                    cursor.executemany(sql, chunk)
        finally:
            cursor.close()

    def rows_into(
        self, conn: Connection, table: str, frame: pl.DataFrame, *, temp: bool = False, analyze: bool = False
    ) -> None:
        """Given a table and a frame whose columns it has, add the frame's rows to it.

        With temp, the table is a session-private scratch table, made anew with the frame's
        columns (TEXT/BIGINT/DOUBLE as their types); with analyze, PostgreSQL gathers
        its statistics for the joins that read it. PostgreSQL gets COPY (CSV), SQLite
        executemany: both stream.
        """
        if temp:
            columns = ", ".join(f"{name} {_sql_type(dtype)}" for name, dtype in frame.schema.items())
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {'temp' if self.is_sqlite else 'pg_temp'}.{table}")
            conn.exec_driver_sql(f"CREATE TEMP TABLE {table} ({columns})")
        if frame.is_empty():
            return
        names = ", ".join(frame.columns)
        if self.is_sqlite:
            marks = ", ".join("?" * frame.width)
            self.executemany(conn, f"INSERT INTO {table} ({names}) VALUES ({marks})", frame.iter_rows())
            return
        cursor = driver_connection(conn).cursor()
        with cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv, NULL '\\N')") as copy:
            for start in range(0, frame.height, BATCH):
                copy.write(frame.slice(start, BATCH).write_csv(include_header=False, null_value="\\N"))
        if analyze:
            # Temp tables have no statistics: without them the planner may scan whole tables to join.
            conn.exec_driver_sql(f"ANALYZE {table}")

    def frame(
        self, conn: Connection, sql: str, schema: dict[str, pl.DataType], params: Sequence[Any] = ()
    ) -> pl.DataFrame:
        """Given a PostgreSQL query (with `%s` placeholders) and the schema of its columns, return its rows
        as a frame.

        They come with COPY as CSV (no Python object per value): an unquoted empty field is NULL
        there, a quoted one an empty string, as polars reads them. (SQLite's bulk reads are in
        queries: one string per query, split by polars.)
        """
        assert not self.is_sqlite
        data = bytearray()
        with driver_connection(conn).cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
            for chunk in copy:
                data += chunk
        if not data:
            return pl.DataFrame(schema=schema)
        return pl.read_csv(bytes(data), has_header=False, schema=schema)

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(
    url: str, *, lock_timeout_s: float = 60.0, config: Path | None = None, for_upgrade: bool = False
) -> Store:
    """Given a store URL, return a Store, an empty database made a store at this code's schema revision.
    A write waits up to lock_timeout_s for another writer's lock, then fails (the file is retried next run).

    Raise ConfigError if the URL is malformed; StoreError if the database cannot be reached, if the store
    was upgraded by a newer sftp-connector, or if it is behind this code's revision (naming the `store
    upgrade` command for the connector.yaml at `config`; with for_upgrade, it is opened as it is).
    """
    try:
        engine = _engine(url, lock_timeout_s)
    except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:
        raise ConfigError(f"store.url: cannot use {_redact_url(url)}: {exc}") from exc
    store = Store(engine)
    try:
        _create_schema(store, config, for_upgrade)
    except sa.exc.SQLAlchemyError as exc:
        store.dispose()
        raise StoreError(f"cannot open the store {_redact_url(url)}: {_short(exc)}") from exc
    except StoreError:
        store.dispose()
        raise
    return store


def _engine(url: str, lock_timeout_s: float) -> Engine:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        # The store holds customer data: its file (and folder) are this user's only; SQLite gives its -wal
        # and -shm files the database file's permissions.
        private_file(Path(url.removeprefix("sqlite:///")))
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": lock_timeout_s, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute(
            f"PRAGMA busy_timeout={int(lock_timeout_s * 1000)}"))
        # Take the write lock at BEGIN: two runs must not both read max(id) and then write. A connection
        # for reads only (beside a write in progress) reads without a transaction of its own.
        event.listen(engine, "begin", lambda conn: None if conn.get_execution_options().get("reads_only")
                     else conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True,
                            connect_args={"options": f"-c lock_timeout={int(lock_timeout_s * 1000)}"})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   "temp_store=MEMORY", "cache_size=-65536"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _create_schema(store: Store, config: Path | None, for_upgrade: bool) -> None:
    command = f"sftp-connector store upgrade --config {config}" if config else "sftp-connector store upgrade"
    with store.engine.begin() as conn:
        migrate.prepare(conn, name=_redact_url(str(store.engine.url)), upgrade_command=command, old_ok=for_upgrade)
    # Records are built with model_construct, never through an ORM query, which would set the mappers up first:
    # without it, reading an attribute of one fails.
    orm.configure_mappers()


def _sql_type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "BIGINT"
    if dtype.is_float():
        return "DOUBLE PRECISION"
    return "TEXT"


def _chunks(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    chunk: list[Sequence[Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_LOW_SPACE = 1 << 20
"""Free bytes under which a failed SQLite write is taken for a full disk (a page or a WAL frame did not fit)."""


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _redact_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<malformed url>"
