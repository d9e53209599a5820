"""SQLModel tables of the profile store.

One row per profile, one column per property (added as properties appear, named in
`property_column`), each cell the property's values as a JSON array text (NULL: no
value). Properties beyond the first 250 live in side tables of 250 columns each
(`profile_x1`, …, keyed by the profile's id; see `layout`), the catalog naming each one's
table. An import writes one row per changed profile, reads and writes only the columns it
maps, and compares values without parsing them. `identity` indexes identifier values
so that rows find their profiles by a join. Row records of imported files are kept as
compressed Arrow blobs, one per batch. Timestamps are UTC epoch seconds (floats), the
same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, LargeBinary, Table, Text, UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

# What `meta.schema_version` of a new store says: 0.3.x refuses a store above 4. This code goes by the
# Alembic revision in `alembic_version` (see `migrate`); revision 0002 set this to 5.
SCHEMA_VERSION = 5

# Identifier values are only ever compared for equality: byte order ("C") makes PostgreSQL's
# index several times faster than a language collation, and is what SQLite does anyway.
_BYTES_TEXT = Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
# On SQLite an INTEGER primary key is the rowid itself: one B-tree per table instead of two.
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


class Profile(SQLModel, table=True):
    """A profile; its property columns (p_1, p_2, …) are added to this table as properties appear."""

    __tablename__ = "profile"
    id: int = Field(sa_column=Column(_ROW_ID, primary_key=True, autoincrement=False))
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))


class PropertyColumn(SQLModel, table=True):
    """Which column of which table (`profile` or a side table) holds a property."""

    __tablename__ = "property_column"
    name: str = Field(sa_column=Column(Text, primary_key=True))
    column: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    tbl: str = Field(sa_column=Column(Text, nullable=False, server_default="profile"))
    """The table holding the column: `profile` or one of its side tables (`profile_x1`, …)."""


class Identity(SQLModel, table=True):
    """Which profile holds an identifier property's value (the first profile to claim it)."""

    __tablename__ = "identity"
    __table_args__ = ({"sqlite_with_rowid": False},)
    property: str = Field(sa_column=Column(_BYTES_TEXT, primary_key=True))
    value: str = Field(sa_column=Column(_BYTES_TEXT, primary_key=True))
    profile_id: int = Field(sa_column=Column(BigInteger, nullable=False))


class GroupEntity(SQLModel, table=True):
    """A group (household, company, …): laid out as a profile, its columns named in `group_property_column`.

    Its identifier value is held by the property `@<type>` and indexed in `group_identity`.
    """

    __tablename__ = "group_entity"
    id: int = Field(sa_column=Column(_ROW_ID, primary_key=True, autoincrement=False))
    type: str = Field(sa_column=Column(Text, nullable=False, index=True))
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))


class GroupPropertyColumn(SQLModel, table=True):
    """Which column of which table (`group_entity` or a side table) holds a group property."""

    __tablename__ = "group_property_column"
    name: str = Field(sa_column=Column(Text, primary_key=True))
    column: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    tbl: str = Field(sa_column=Column(Text, nullable=False, server_default="group_entity"))
    """The table holding the column: `group_entity` or one of its side tables (`group_entity_x1`, …)."""


class GroupIdentity(SQLModel, table=True):
    """Which group holds an identifier value (property `@<type>`)."""

    __tablename__ = "group_identity"
    __table_args__ = ({"sqlite_with_rowid": False},)
    property: str = Field(sa_column=Column(_BYTES_TEXT, primary_key=True))
    value: str = Field(sa_column=Column(_BYTES_TEXT, primary_key=True))
    profile_id: int = Field(sa_column=Column(BigInteger, nullable=False))


class ProfileGroup(SQLModel, table=True):
    """A profile's membership of a group, by the group's type and identifier value (the group may come later)."""

    __tablename__ = "profile_group"
    __table_args__ = (Index("ix_profile_group_group", "type", "key"), {"sqlite_with_rowid": False})
    profile_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    type: str = Field(sa_column=Column(_BYTES_TEXT, primary_key=True))
    key: str = Field(sa_column=Column(_BYTES_TEXT, primary_key=True))
    goal: str = Field(sa_column=Column(Text, nullable=False))
    """The goal that made the link (an overwrite removes its own links only)."""


class Event(SQLModel, table=True):
    """A timeline event of a profile; (type, event_id) is unique, so a re-import updates it in place."""

    __tablename__ = "event"
    __table_args__ = (UniqueConstraint("type", "event_id"),)
    id: int | None = Field(default=None, primary_key=True)
    type: str = Field(sa_column=Column(_BYTES_TEXT, nullable=False))
    event_id: str = Field(sa_column=Column(_BYTES_TEXT, nullable=False))
    profile_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    time: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    properties: str = Field(sa_column=Column(Text, nullable=False))
    """A JSON object of strings."""
    nested: str = Field(sa_column=Column(Text, nullable=False))
    """A JSON object: nested list name → list of objects of strings."""
    goal: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))


class Product(SQLModel, table=True):
    """What imported orders say about a product: how many order lines bought it, and when last."""

    __tablename__ = "product"
    sku: str = Field(sa_column=Column(_BYTES_TEXT, primary_key=True))
    times_bought: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_bought: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ExportState(SQLModel, table=True):
    """Where an export goal's `changed_only` resumes: profiles updated after the watermark are exported next.

    It moves only after a successful upload, to the time the export began reading.
    """

    __tablename__ = "export_state"
    goal: str = Field(sa_column=Column(Text, primary_key=True))
    watermark: float = Field(sa_column=Column(Float, nullable=False))
    last_file: str = Field(sa_column=Column(Text, nullable=False))
    run: str = Field(sa_column=Column(Text, nullable=False))


class ErasedProfile(SQLModel, table=True):
    """A profile erased on request: its id is never used again, and no row record may bring it back."""

    __tablename__ = "erased_profile"
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    erased_at: float = Field(sa_column=Column(Float, nullable=False))
    goal: str = Field(sa_column=Column(Text, nullable=False))


class GoalSnapshot(SQLModel, table=True):
    """The profiles an overwrite goal's latest file set held (sorted Arrow ids, zstd): what the next one may clear."""

    __tablename__ = "goal_snapshot"
    goal: str = Field(sa_column=Column(Text, primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ImportedFile(SQLModel, table=True):
    """The last import of a remote file by a goal: what change detection compares against."""

    __tablename__ = "imported_file"
    __table_args__ = (UniqueConstraint("goal", "path"),)
    id: int | None = Field(default=None, primary_key=True)
    goal: str = Field(sa_column=Column(Text, nullable=False))
    path: str = Field(sa_column=Column(Text, nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    mtime: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(sa_column=Column(Text, nullable=False))
    config_digest: str = Field(sa_column=Column(Text, nullable=False))
    listed_at: float = Field(sa_column=Column(Float, nullable=False))
    imported_at: float = Field(sa_column=Column(Float, nullable=False))
    run: str = Field(sa_column=Column(Text, nullable=False))


class ImportedRows(SQLModel, table=True):
    """The rows once applied from a file, a batch per blob: key, content hash, profile, `sum` contributions.

    Blobs are Arrow IPC (zstd); a later blob's row replaces an earlier one's with the same key.
    """

    __tablename__ = "imported_rows"
    file_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class GoalProfiles(SQLModel, table=True):
    """Which profiles a goal has exchanged (its unique profiles; what an overwrite may clear).

    The ids are one sorted Arrow array (zstd) per goal: rewriting it costs far less than a
    row per profile.
    """

    __tablename__ = "goal_profiles"
    goal: str = Field(sa_column=Column(Text, primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Run(SQLModel, table=True):
    __tablename__ = "run"
    id: str = Field(sa_column=Column(Text, primary_key=True))
    trigger: str = Field(sa_column=Column(Text, nullable=False))
    started_at: float = Field(sa_column=Column(Float, nullable=False, index=True))
    finished_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    status: str = Field(sa_column=Column(Text, nullable=False))
    dry_run: bool = False


class GoalRun(SQLModel, table=True):
    __tablename__ = "goal_run"
    __table_args__ = (Index("ix_goal_run_run", "run"),)
    id: int | None = Field(default=None, primary_key=True)
    run: str = Field(sa_column=Column(Text, nullable=False))
    goal: str = Field(sa_column=Column(Text, nullable=False, index=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    started_at: float = Field(sa_column=Column(Float, nullable=False))
    finished_at: float = Field(sa_column=Column(Float, nullable=False))
    profiles_created: int = 0
    profiles_updated: int = 0
    last_profiles: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    unique_profiles_exchanged: int = 0


class FileRun(SQLModel, table=True):
    __tablename__ = "file_run"
    id: int | None = Field(default=None, primary_key=True)
    goal_run_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    path: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))
    sha256: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    counts: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    signer: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    warning: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """What went wrong beside the file's own outcome: its after_import or on_error action failed."""


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(sa_column=Column(Text, primary_key=True))
    value: str = Field(sa_column=Column(Text, nullable=False))


def table_of(model: type[SQLModel]) -> Table:
    """Given a table model, return its SQLAlchemy table: every query uses the table, never the ORM (SQLModel
    declares `__table__` on table models only, so the type checker does not know it)."""
    table: Any = getattr(model, "__table__")  # noqa: B009
    assert isinstance(table, Table)
    return table
