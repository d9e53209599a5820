"""Property side tables: each catalog says which table holds a property's column (`tbl`).

Every column of a 0.3.x store is in its main table, which is the new column's server
default. Side tables (`profile_x1`, …) are made later, as properties appear. meta's
schema_version becomes 5, so that 0.3.x, which would not read side tables, refuses the
store. The downgrade refuses while any property lives in a side table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sftp_connector import failpoints
from sftp_connector.errors import StoreError

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CATALOGS = {"property_column": "profile", "group_property_column": "group_entity"}


def upgrade() -> None:
    op.add_column("property_column", sa.Column("tbl", sa.Text(), nullable=False, server_default="profile"))
    failpoints.reached("mid-upgrade")  # the fault tests' SIGKILL between two statements of one upgrade
    op.add_column("group_property_column",
                  sa.Column("tbl", sa.Text(), nullable=False, server_default="group_entity"))
    _schema_version("5")


def downgrade() -> None:
    bind = op.get_bind()
    for catalog, main in CATALOGS.items():
        table = sa.table(catalog, sa.column("name"), sa.column("tbl"))
        held = bind.execute(sa.select(sa.func.count()).where(table.c.tbl != main)).scalar_one()
        if held:
            raise StoreError(f"cannot go back to revision 0001: {held} propert{'y' if held == 1 else 'ies'} of "
                             f"{catalog} live in side tables, which 0.3.x would not read")
    for catalog in CATALOGS:
        with op.batch_alter_table(catalog) as batch:  # SQLite rebuilds the table, keeping its rows
            batch.drop_column("tbl")
    _schema_version("4")


def _schema_version(value: str) -> None:
    meta = sa.table("meta", sa.column("key"), sa.column("value"))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))
