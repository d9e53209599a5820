"""The store's schema revisions, run by Alembic through `store.migrate` (no alembic.ini).

`env.py` runs them on the connection `migrate` hands over, inside its one transaction;
`versions/NNNN_<what>.py` are the revisions, oldest first. A new one copies the newest's
header (revision, down_revision), writes its tables out as they are at that point (never
through `models`, which moves on), and is added to `migrate.REVISIONS`.
"""
