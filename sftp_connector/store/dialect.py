"""What differs between SQLite and PostgreSQL, behind one small interface that only `store/` uses.

Code above `store/` never asks which database it has: it hands `store/` a plan (an export's
selection, a segment condition, a goal to lock) and `store/` picks the SQL through the
store's `dialect`. Each method says what it returns on both databases.

    Dialect              the interface (abstract base class)
    ├── SqliteDialect    embedded, one local file: `:name` parameters, json_each, flock goal locks
    └── PostgresDialect  psycopg: `%(name)s` parameters, json_array_elements_text, advisory goal locks
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sftp_connector.errors import ConfigError, StoreError
from sftp_connector.private import FILE_MODE, private_dir

# A JSON value that reads as a number (PostgreSQL would raise on a bad cast).
_PG_NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
# Text that SQLite may read as a number: only digits, dots, exponents and signs, and at least one digit.
_SQLITE_NUMERIC = "NOT GLOB '*[^0-9.eE+-]*' AND trim({0}) GLOB '*[0-9]*'"


class Dialect(abc.ABC):
    """The SQL and locking that differ between the two databases."""

    name: ClassVar[str]

    # ── SQL of segments and exports (store/segments.py, store/export_reads.py) ───────────────

    @abc.abstractmethod
    def placeholder(self, name: str) -> str:
        """Given a bound parameter's name, return its mark in a query run on the raw DB-API cursor."""

    @abc.abstractmethod
    def json_elements(self, cell: str) -> str:
        """Given an expression of JSON array text, return a FROM source `j` whose `j.value` is each element."""

    @abc.abstractmethod
    def element_text(self, value: str) -> str:
        """Given `j.value` of json_elements, return it as text."""

    @abc.abstractmethod
    def element_number(self, value: str) -> str:
        """Given `j.value` of json_elements, return it as a number, null when it does not read as one."""

    @abc.abstractmethod
    def json_field_number(self, document: str, key: str, bind: Callable[[Any], str]) -> str:
        """Given an expression of JSON object text and a key, return the key's value as a number (null when
        it does not read as one); bind(value) binds a parameter and returns its placeholder."""

    @abc.abstractmethod
    def contains(self, text: str, needle: str) -> str:
        """Given two text expressions, return a test that the first holds the second."""

    # ── goal locks (goals/locks.py) ──────────────────────────────────────────────────────

    @abc.abstractmethod
    def goal_lock(self, engine: Engine, goal: str, folder: Path) -> contextlib.AbstractContextManager[bool]:
        """Given a goal, return a context that holds its lock for the block and yields True, or yields False
        (holding nothing) if another process holds it; folder is where lock files may go. Raise StoreError
        if the database cannot take it."""

    @abc.abstractmethod
    def goal_lock_held(self, engine: Engine, goal: str, folder: Path) -> bool:
        """Given a goal, return whether some process (this one too) holds its lock now, without taking it:
        taking it even briefly could make a run that starts then skip the goal. Raise StoreError if the
        database cannot say."""

    # ── writing profiles ─────────────────────────────────────────────────────────────────
    # The place for the SQL that merge's plans are written with (upserts, scratch tables, bulk
    # loads, id sequences): merge's `is_sqlite` branches move here, one method per operation,
    # named by what it does and implemented by both subclasses.


class SqliteDialect(Dialect):
    """SQLite: one local file, named parameters as `:name`, JSON through json_each / json_extract."""

    name = "sqlite"

    def placeholder(self, name: str) -> str:
        return f":{name}"

    def json_elements(self, cell: str) -> str:
        return f"json_each({cell}) j"

    def element_text(self, value: str) -> str:
        return f"CAST({value} AS TEXT)"

    def element_number(self, value: str) -> str:
        return (f"(CASE WHEN j.type IN ('integer', 'real') THEN {value} WHEN j.type = 'text' AND trim({value}) "
                f"{_SQLITE_NUMERIC.format(value)} THEN CAST(trim({value}) AS REAL) END)")

    def json_field_number(self, document: str, key: str, bind: Callable[[Any], str]) -> str:
        raw = f"json_extract({document}, {bind('$.' + _json_key(key))})"
        return f"(CASE WHEN trim({raw}) {_SQLITE_NUMERIC.format(raw)} THEN CAST(trim({raw}) AS REAL) END)"

    def contains(self, text: str, needle: str) -> str:
        return f"instr({text}, {needle}) > 0"

    def goal_lock(self, engine: Engine, goal: str, folder: Path) -> contextlib.AbstractContextManager[bool]:
        # The store is one local file, so the replicas that share it share this machine: a flock will do.
        return _file_lock(_lock_file(folder, goal))

    def goal_lock_held(self, engine: Engine, goal: str, folder: Path) -> bool:
        return _flocked(_lock_file(folder, goal))


class PostgresDialect(Dialect):
    """PostgreSQL through psycopg: named parameters as `%(name)s`, JSON through json functions on text."""

    name = "postgresql"

    def placeholder(self, name: str) -> str:
        return f"%({name})s"

    def json_elements(self, cell: str) -> str:
        return f"json_array_elements_text(({cell})::json) AS j(value)"

    def element_text(self, value: str) -> str:
        return value

    def element_number(self, value: str) -> str:
        return _pg_number(value)

    def json_field_number(self, document: str, key: str, bind: Callable[[Any], str]) -> str:
        return _pg_number(f"({document}::json ->> {bind(key)})")

    def contains(self, text: str, needle: str) -> str:
        return f"strpos({text}, {needle}) > 0"

    def goal_lock(self, engine: Engine, goal: str, folder: Path) -> contextlib.AbstractContextManager[bool]:
        return _advisory_lock(engine, goal)

    def goal_lock_held(self, engine: Engine, goal: str, folder: Path) -> bool:
        key = _advisory_key(goal) & 0xFFFFFFFFFFFFFFFF
        try:
            with engine.connect() as conn:
                return bool(conn.execute(sa.text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                    "classid::bigint = :high AND objid::bigint = :low AND objsubid = 1 AND "
                    "database = (SELECT oid FROM pg_database WHERE datname = current_database()))"),
                    {"high": key >> 32, "low": key & 0xFFFFFFFF}).scalar())
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot read the goal locks: {_short(exc)}", goal=goal) from exc


def dialect_for(engine: Engine) -> Dialect:
    """Given an engine, return the dialect of its database. Raise ConfigError for a database other than the two."""
    for dialect in (SqliteDialect(), PostgresDialect()):
        if engine.dialect.name == dialect.name:
            return dialect
    raise ConfigError(f"store.url: the store must be SQLite or PostgreSQL, not {engine.dialect.name}")


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # 0.3 made lock files with the umask's mode
    return fd


def _pg_number(value: str) -> str:
    return f"(CASE WHEN {value} ~ '{_PG_NUMBER}' THEN {value}::double precision END)"


def _json_key(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    private_dir(path.parent, own=True)
    with open(path, "a", opener=_private_opener) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _advisory_key(goal: str) -> int:
    return int.from_bytes(hashlib.sha256(f"sftp-connector goal {goal}".encode()).digest()[:8], "big", signed=True)


def _lock_file(folder: Path, goal: str) -> Path:
    return folder / f"{hashlib.sha256(goal.encode()).hexdigest()[:16]}.lock"


def _flocked(path: Path) -> bool:
    """Whether any process holds a flock on the file, read from /proc/locks (Linux); False if unknown."""
    try:
        info = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return False
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    return any(line.split()[1:2] == ["FLOCK"] and wanted in line.split() for line in table.splitlines())


@contextlib.contextmanager
def _advisory_lock(engine: Engine, goal: str) -> Iterator[bool]:
    """A session-level advisory lock on a connection of its own: released with the connection, even if the
    process dies."""
    key = _advisory_key(goal)
    try:
        conn = engine.connect()
        held = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"cannot take the goal's lock: {_short(exc)}", goal=goal) from exc
    try:
        yield held
    finally:
        # A lost connection has released the lock with it: a failing unlock must not hide the goal's outcome.
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            if held:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            conn.close()


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


def driver_connection(conn: sa.Connection) -> Any:
    """Given a connection, return the DB-API connection under it (sqlite3's or psycopg's), for what
    SQLAlchemy does not offer: executemany on the raw cursor, COPY, SQLite's backup."""
    driver = conn.connection.driver_connection
    assert driver is not None, "the connection is closed"
    return driver
