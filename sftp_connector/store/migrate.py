"""Which schema revision a store is at, and Alembic upgrades to this code's (`migrations/`).

A new store is made from `models` and stamped with the newest revision (Alembic's
cookbook). A store of 0.3.x has no `alembic_version` table and `meta.schema_version` 4: it
is at the baseline 0001, stamped in the upgrade's transaction; one of 0.2.x (version 3) is
at `base`, before 0001, which creates what it lacks. An upgrade runs every revision in one
transaction (on SQLite after copying the file beside it): interrupted, it leaves the store
at its old revision. A store behind this code is refused at start with the command that
upgrades it; a store at a revision this code does not know was upgraded by a newer one,
and is refused.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from sftp_connector.errors import StoreError
from sftp_connector.store import models
from sftp_connector.store.dialect import driver_connection

if TYPE_CHECKING:
    from alembic.config import Config

    from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)

# The revisions in `migrations/versions`, oldest first (a test checks them against Alembic's
# script directory): every run opens the store, and importing Alembic to read them costs 90 ms.
REVISIONS = ("0001", "0002", "0003")
HEAD = REVISIONS[-1]
BASE = "base"
"""Alembic's name for before the first revision: a store of 0.2.x (meta.schema_version 3)."""
SCRIPTS = Path(__file__).with_name("migrations")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What `upgrade` did: the revision before and after, and the copy of a SQLite file taken first."""

    before: str
    after: str
    backup: Path | None = None


def revision(conn: Connection) -> str | None:
    """Given a connection, return the store's revision (`base` for a store of 0.2.x), or None for a
    database with no store in it. A revision not in REVISIONS is a newer code's."""
    inspector = sa.inspect(conn)
    if inspector.has_table("alembic_version"):
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() or BASE
    if not inspector.has_table("meta"):
        return None
    meta = models.table_of(models.Meta)
    version = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    if version is None or int(version) < 4:
        return BASE
    return "0001" if int(version) == 4 else f"schema version {version}"


def prepare(conn: Connection, *, name: str, upgrade_command: str, old_ok: bool = False) -> None:
    """Given a connection inside a transaction and the store's name (its URL) for messages, make an empty
    database a store at HEAD, or check the store's revision. Raise StoreError if the store is newer than
    this code, or older (unless old_ok), naming upgrade_command."""
    current = revision(conn)
    if current is None:
        SQLModel.metadata.create_all(conn)
        conn.execute(sa.insert(models.Meta).values(key="schema_version", value=str(models.SCHEMA_VERSION)))
        run(conn, "stamp", HEAD)
        return
    _refuse_newer(current, name)
    if current != HEAD and not old_ok:
        raise StoreError(f"the store {name} is at revision {_label(current)} and this sftp-connector needs "
                         f"{HEAD}: run `{upgrade_command}` to upgrade it")


def upgrade(store: Store) -> Upgrade:
    """Given an open store, bring it to HEAD in one transaction, on SQLite after copying the file beside
    it (`<file>.bak-<revision>`, 0600); return what was done. Raise StoreError if the store is newer
    than this code or the database fails (the store is then as it was)."""
    with store.connection() as conn:
        before = revision(conn) or HEAD
    _refuse_newer(before, _name(store))
    if before == HEAD:
        return Upgrade(HEAD, HEAD)
    backup = _backup(store, before) if _sqlite_file(store) else None
    with store.transaction() as conn:
        before = revision(conn) or HEAD  # under the write lock now: another upgrade may have run
        _refuse_newer(before, _name(store))
        if before == "0001" and not sa.inspect(conn).has_table("alembic_version"):
            run(conn, "stamp", "0001")  # a store of 0.3.x
        run(conn, "upgrade", HEAD)
    logger.info("upgraded the store from revision %s to %s", _label(before), HEAD)
    return Upgrade(before, HEAD, backup)


def downgrade(store: Store, target: str) -> Upgrade:
    """Given an open store at HEAD or behind it and an older revision, take it back there in one
    transaction; return what was done. Raise StoreError if a revision refuses (its data would be
    lost) or the database fails (the store is then as it was)."""
    with store.transaction() as conn:
        before = revision(conn) or HEAD
        _refuse_newer(before, _name(store))
        if target not in REVISIONS:
            raise StoreError(f"cannot go back to revision {target}: the revisions are {', '.join(REVISIONS)}")
        run(conn, "downgrade", target)
    return Upgrade(before, target)


def _backup(store: Store, current: str) -> Path:
    """Copy the SQLite file through the backup API (a consistent copy, WAL included) to
    `<file>.bak-<revision>`, written under a temporary name first; return its path."""
    source = Path(str(store.engine.url.database))
    target = source.with_name(f"{source.name}.bak-{current}")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        copy = sqlite3.connect(partial)
        try:
            with store.engine.connect() as conn:
                driver_connection(conn).backup(copy)
        finally:
            copy.close()
        os.replace(partial, target)
    except (OSError, sqlite3.Error, sa.exc.SQLAlchemyError) as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot copy the store to {target} before upgrading it, nothing was changed: {exc}") \
            from exc
    logger.info("copied the store to %s before upgrading it", target)
    return target


def run(conn: Connection, command: str, target: str) -> None:
    """Given a connection inside a transaction, run an Alembic command (stamp, upgrade, downgrade) to `target`
    on it, committing nothing."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines say what ours do, less plainly
    from alembic import command as commands

    getattr(commands, command)(_config(conn), target)


def _config(conn: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))  # ConfigParser interpolates
    config.attributes["connection"] = conn
    return config


def _refuse_newer(current: str, name: str) -> None:
    if current != BASE and current not in REVISIONS:
        raise StoreError(f"the store {name} is at revision {current}, newer than this sftp-connector knows (its "
                         f"newest is {HEAD}): a newer sftp-connector upgraded it; run that one")


def _sqlite_file(store: Store) -> bool:
    return store.is_sqlite and store.engine.url.database not in (None, "", ":memory:")


def _name(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=True)


def _label(current: str) -> str:
    return "base (a store of 0.2.x)" if current == BASE else current
