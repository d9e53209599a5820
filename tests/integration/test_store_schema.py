"""The store's schema on both databases: a store of an older version upgrades in place."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from sftp_connector.store import models
from sftp_connector.store.db import open_store


def _indexes(store_url: str) -> set[str]:
    store = open_store(store_url)
    try:
        with store.connection() as conn:
            return {index["name"] for table in ("profile", "group_entity")
                    for index in sa.inspect(conn).get_indexes(table)}
    finally:
        store.dispose()


def test_a_version_3_store_loses_its_updated_at_indexes_and_is_marked_version_4(store_url: str) -> None:
    store = open_store(store_url)
    with store.transaction() as conn:  # make it look like a store written by the previous version
        conn.exec_driver_sql("CREATE INDEX ix_profile_updated_at ON profile (updated_at)")
        conn.exec_driver_sql("CREATE INDEX ix_group_entity_updated_at ON group_entity (updated_at)")
        conn.execute(sa.update(models.Meta).where(models.Meta.key == "schema_version").values(value="3"))
    store.dispose()

    assert not {"ix_profile_updated_at", "ix_group_entity_updated_at"} & _indexes(store_url)
    upgraded = open_store(store_url)
    with upgraded.connection() as conn:
        version = conn.execute(sa.select(models.Meta.value).where(models.Meta.key == "schema_version")).scalar()
    upgraded.dispose()
    assert version == str(models.SCHEMA_VERSION) == "4"


def test_a_new_sqlite_store_keys_profiles_by_rowid(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    with store.connection() as conn:
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'profile'").scalar()
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN SELECT * FROM profile WHERE id = 7").fetchall()
    store.dispose()
    assert "id INTEGER NOT NULL" in sql
    assert any("INTEGER PRIMARY KEY" in str(row[-1]) for row in plan)  # a rowid lookup, no separate index
