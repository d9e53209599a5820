"""A warning on a file of the run history: its `after_import` or `on_error` action failed (a read-only
server, say) though the file itself imported or failed as recorded. NULL for every earlier file."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("file_run", sa.Column("warning", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("file_run") as batch:  # SQLite rebuilds the table, keeping its rows
        batch.drop_column("warning")
