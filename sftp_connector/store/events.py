"""Timeline events and the product store: the rows `events.py` makes, stored and read back.

Every function takes the Store and an open Connection: the caller owns the transaction.
"""

from __future__ import annotations

import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector.store.db import Store
from sftp_connector.store.queries import fetch


def stored_events(store: Store, conn: Connection, kind: str, ids: pl.Series) -> pl.DataFrame:
    """Given an event type and event ids, return (event_id, time, nested) of those already stored."""
    schema = {"event_id": pl.String, "time": pl.String, "nested": pl.String}
    ids = ids.drop_nulls().unique()
    if ids.is_empty():
        return pl.DataFrame(schema=schema)
    store.rows_into(conn, "wanted_event", ids.alias("event_id").to_frame(), temp=True, analyze=True)
    rows = fetch(conn, "SELECT e.event_id, e.time, e.nested FROM wanted_event w JOIN event e "
                        f"ON e.type = {_param(store)} AND e.event_id = w.event_id", (kind,))
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def upsert_events(store: Store, conn: Connection, events: pl.DataFrame) -> None:
    """Given (type, event_id, profile_id, time, properties, nested, goal, updated_at) rows, insert or update them."""
    if events.is_empty():
        return
    columns = ["type", "event_id", "profile_id", "time", "properties", "nested", "goal", "updated_at"]
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
    store.executemany(conn, f"INSERT INTO event ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                            f"ON CONFLICT (type, event_id) DO UPDATE SET {sets}", events.select(columns).iter_rows())


def count_products(store: Store, conn: Connection, changes: pl.DataFrame) -> None:
    """Given (sku, times_bought delta, last_bought) rows, add them to the product table."""
    if changes.is_empty():
        return
    latest = "MAX" if store.is_sqlite else "GREATEST"
    store.executemany(conn, "INSERT INTO product (sku, times_bought, last_bought) VALUES (?, ?, ?) "
                            "ON CONFLICT (sku) DO UPDATE SET times_bought = product.times_bought + "
                            f"excluded.times_bought, last_bought = {latest}(COALESCE(product.last_bought, ''), "
                            "COALESCE(excluded.last_bought, ''))",
                      changes.select("sku", "times_bought", "last_bought").iter_rows())


def _param(store: Store) -> str:
    return "?" if store.is_sqlite else "%s"
