"""The store as 0.3.x made it (meta.schema_version 4): the baseline.

A store of 0.3.x is stamped with this revision without running it. Run, it creates whatever
of that schema is missing and drops the `updated_at` indexes 0.3.0 dropped, so that a store
of 0.2.x (schema version 3, the same tables) reaches it too. The tables are written out as
0.3.4's `models` made them, property columns aside (they are added as properties appear).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from sftp_connector.errors import StoreError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BYTES_TEXT = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _column(name: str, kind: sa.types.TypeEngine[Any] | type[sa.types.TypeEngine[Any]], *, null: bool = False,
            primary_key: bool = False, index: bool = False, unique: bool = False) -> sa.Column[Any]:
    """A column, NOT NULL unless null."""
    return sa.Column(name, kind, nullable=null, primary_key=primary_key, index=index, unique=unique)


def _tables() -> sa.MetaData:
    """Return 0.3.4's tables."""
    meta = sa.MetaData()
    key, text, big, real = sa.Text, sa.Text, sa.BigInteger, sa.Float  # key: a TEXT primary key
    sa.Table("profile", meta, sa.Column("id", _ROW_ID, primary_key=True, autoincrement=False),
             _column("created_at", real), _column("updated_at", real))
    sa.Table("property_column", meta, sa.Column("name", key, primary_key=True),
             _column("column", text, unique=True))
    sa.Table("identity", meta, sa.Column("property", _BYTES_TEXT, primary_key=True),
             sa.Column("value", _BYTES_TEXT, primary_key=True), _column("profile_id", big), sqlite_with_rowid=False)
    sa.Table("group_entity", meta, sa.Column("id", _ROW_ID, primary_key=True, autoincrement=False),
             _column("type", text, index=True), _column("created_at", real), _column("updated_at", real))
    sa.Table("group_property_column", meta, sa.Column("name", key, primary_key=True),
             _column("column", text, unique=True))
    sa.Table("group_identity", meta, sa.Column("property", _BYTES_TEXT, primary_key=True),
             sa.Column("value", _BYTES_TEXT, primary_key=True), _column("profile_id", big), sqlite_with_rowid=False)
    sa.Table("profile_group", meta, sa.Column("profile_id", big, primary_key=True),
             sa.Column("type", _BYTES_TEXT, primary_key=True), sa.Column("key", _BYTES_TEXT, primary_key=True),
             _column("goal", text), sa.Index("ix_profile_group_group", "type", "key"), sqlite_with_rowid=False)
    sa.Table("event", meta, sa.Column("id", sa.Integer, primary_key=True), _column("type", _BYTES_TEXT),
             _column("event_id", _BYTES_TEXT), _column("profile_id", big, index=True),
             _column("time", text, null=True), _column("properties", text), _column("nested", text),
             _column("goal", text), _column("updated_at", real), sa.UniqueConstraint("type", "event_id"))
    sa.Table("product", meta, sa.Column("sku", _BYTES_TEXT, primary_key=True), _column("times_bought", big),
             _column("last_bought", text, null=True))
    sa.Table("export_state", meta, sa.Column("goal", key, primary_key=True), _column("watermark", real),
             _column("last_file", text), _column("run", text))
    sa.Table("erased_profile", meta, sa.Column("id", big, primary_key=True, autoincrement=False),
             _column("erased_at", real), _column("goal", text))
    for name in ("goal_snapshot", "goal_profiles"):
        sa.Table(name, meta, sa.Column("goal", key, primary_key=True), _column("count", big),
                 _column("data", sa.LargeBinary))
    sa.Table("imported_file", meta, sa.Column("id", sa.Integer, primary_key=True), _column("goal", text),
             _column("path", text), _column("size", big), _column("mtime", big), _column("sha256", text),
             _column("config_digest", text), _column("listed_at", real), _column("imported_at", real),
             _column("run", text), sa.UniqueConstraint("goal", "path"))
    sa.Table("imported_rows", meta, sa.Column("file_id", big, primary_key=True),
             sa.Column("seq", big, primary_key=True), _column("data", sa.LargeBinary))
    _history(meta)
    sa.Table("meta", meta, sa.Column("key", key, primary_key=True), _column("value", text))
    return meta


def _history(meta: sa.MetaData) -> None:
    text, big, real, count = sa.Text, sa.BigInteger, sa.Float, sa.Integer
    sa.Table("run", meta, sa.Column("id", text, primary_key=True), _column("trigger", text),
             _column("started_at", real, index=True), _column("finished_at", real, null=True),
             _column("status", text), _column("dry_run", sa.Boolean))
    sa.Table("goal_run", meta, sa.Column("id", sa.Integer, primary_key=True), _column("run", text),
             _column("goal", text, index=True), _column("kind", text), _column("status", text),
             _column("error", text, null=True), _column("started_at", real), _column("finished_at", real),
             _column("profiles_created", count), _column("profiles_updated", count),
             _column("last_profiles", sa.JSON), _column("unique_profiles_exchanged", count),
             sa.Index("ix_goal_run_run", "run"))
    sa.Table("file_run", meta, sa.Column("id", sa.Integer, primary_key=True),
             _column("goal_run_id", big, index=True), _column("path", text), _column("status", text),
             _column("sha256", text, null=True), _column("counts", sa.JSON), _column("error", text, null=True),
             _column("signer", text, null=True))


def upgrade() -> None:
    _tables().create_all(op.get_bind(), checkfirst=True)
    for index in ("ix_profile_updated_at", "ix_group_entity_updated_at"):  # 0.3.0 dropped them
        op.execute(f"DROP INDEX IF EXISTS {index}")
    meta = sa.table("meta", sa.column("key"), sa.column("value"))
    version = sa.select(meta.c.value).where(meta.c.key == "schema_version")
    if op.get_bind().execute(version).scalar() is None:
        op.execute(meta.insert().values(key="schema_version", value="4"))
    else:
        op.execute(meta.update().where(meta.c.key == "schema_version").values(value="4"))


def downgrade() -> None:
    raise StoreError("revision 0001 is the store of 0.3.x, the first there is: nothing comes before it")
