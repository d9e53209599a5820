"""Alembic's entry point: run the revisions on the connection `store.migrate` hands over.

That connection is already inside a transaction (SQLite's engine begins none by itself), so
Alembic starts and commits none: every revision of one upgrade commits together, or none does.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
if not connection.in_transaction():
    raise RuntimeError("store migrations run only inside the caller's transaction")
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
