"""The store's schema on both databases: a store of 0.2.x upgrades in place (0.3.4's: test_migrations); how SQLite
gives new profiles their ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from sftp_connector.errors import StoreError
from sftp_connector.store import migrate, models, writes
from sftp_connector.store.db import open_store


def _indexes(store_url: str) -> set[str]:
    store = open_store(store_url)
    try:
        with store.connection() as conn:
            return {index["name"] for table in ("profile", "group_entity")
                    for index in sa.inspect(conn).get_indexes(table)}
    finally:
        store.dispose()


def test_a_version_3_store_loses_its_updated_at_indexes_on_upgrade(store_url: str) -> None:
    store = open_store(store_url)
    migrate.downgrade(store, "0001")
    with store.transaction() as conn:  # make it look like a store written by 0.2.x
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.exec_driver_sql("CREATE INDEX ix_profile_updated_at ON profile (updated_at)")
        conn.exec_driver_sql("CREATE INDEX ix_group_entity_updated_at ON group_entity (updated_at)")
        conn.execute(sa.update(models.Meta).where(models.Meta.key == "schema_version").values(value="3"))
    store.dispose()
    with pytest.raises(StoreError, match=r"at revision base \(a store of 0.2.x\) and this sftp-connector needs"):
        open_store(store_url)

    old = open_store(store_url, for_upgrade=True)
    assert migrate.upgrade(old).before == "base"
    old.dispose()
    assert not {"ix_profile_updated_at", "ix_group_entity_updated_at"} & _indexes(store_url)
    upgraded = open_store(store_url)
    with upgraded.connection() as conn:
        version = conn.execute(sa.select(models.Meta.value).where(models.Meta.key == "schema_version")).scalar()
    upgraded.dispose()
    assert version == str(models.SCHEMA_VERSION) == "5"


def test_a_new_sqlite_store_keys_profiles_by_rowid(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    with store.connection() as conn:
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'profile'").scalar()
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN SELECT * FROM profile WHERE id = 7").fetchall()
    store.dispose()
    assert "id INTEGER NOT NULL" in sql
    assert any("INTEGER PRIMARY KEY" in str(row[-1]) for row in plan)  # a rowid lookup, no separate index


def _profiles(store_url: str, setup: str, rows: list[tuple[str, ...]]) -> tuple[int, list[tuple[int, float, str]]]:
    """Append rows of one property column to a SQLite store after `setup`; return the first id and the table."""
    store = open_store(store_url)
    try:
        with store.transaction() as conn:
            conn.exec_driver_sql("ALTER TABLE profile ADD COLUMN p_1 TEXT")
            if setup:
                conn.exec_driver_sql(setup)
            first = writes.append_profiles(store, conn, writes.Prepared(["p_1"], [(5.0, *row) for row in rows]))
            table = conn.exec_driver_sql("SELECT id, created_at, p_1 FROM profile ORDER BY id").fetchall()
        return first, [tuple(row) for row in table]
    finally:
        store.dispose()


def test_sqlite_new_profiles_get_consecutive_ids_in_order(tmp_path: Path) -> None:
    first, table = _profiles(f"sqlite:///{tmp_path}/s.db", "INSERT INTO profile VALUES (4, 1, 1, '[\"d\"]')",
                             [('["a"]',), ('["b"]',)])
    assert first == 5
    assert table == [(4, 1.0, '["d"]'), (5, 5.0, '["a"]'), (6, 5.0, '["b"]')]


def test_sqlite_new_profiles_get_ids_above_an_erased_profiles(tmp_path: Path) -> None:
    first, table = _profiles(f"sqlite:///{tmp_path}/s.db", "INSERT INTO erased_profile VALUES (9, 1, 'crm')",
                             [('["a"]',), ('["b"]',), ('["c"]',)])
    assert first == 10
    assert [row[0] for row in table] == [10, 11, 12]


def test_sqlite_ids_that_do_not_come_out_consecutive_fail_the_write(tmp_path: Path) -> None:
    # At the largest rowid SQLite picks unused ids at random: the check must catch it, not the records.
    with pytest.raises(StoreError, match="not consecutive"):
        _profiles(f"sqlite:///{tmp_path}/s.db", f"INSERT INTO profile VALUES ({2**63 - 1}, 1, 1, NULL)",
                  [('["a"]',), ('["b"]',)])
