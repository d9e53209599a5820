"""Timeline events from a linked set's rows: one event per row of the event file, its nested
items (an order's products) from the rows of a deeper linked file.

An event belongs to the profile its root row found. (type, id) is unique in the store, so
re-importing an event updates it in place, never duplicates it. With `product_store`, every
nested item holding a `sku` counts in the product table; an updated event first takes back
what its earlier version counted, so re-imports never double-count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import polars as pl
from sqlalchemy.engine import Connection

from sftp_connector import identity, linked
from sftp_connector.config import models
from sftp_connector.csvio import ROW
from sftp_connector.errors import InputError, RowReject
from sftp_connector.store import events as store_events
from sftp_connector.store import queries
from sftp_connector.store.db import Store

# Accepted time forms; an offset or `Z` is converted to UTC, a time without one is taken as UTC.
_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%:z", "%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M:%S%:z")
_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S",
          "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M")


@dataclass(slots=True)
class Outcome:
    """What importing one kind of event from a linked set did."""

    written: int = 0
    unmatched: int = 0
    rejects: list[RowReject] = field(default_factory=list)


def iso_time(text: pl.Expr) -> pl.Expr:
    """Given a String column of dates or date-times (ISO 8601 forms), return them as UTC
    `YYYY-MM-DDTHH:MM:SSZ` text; null where a value is not such a time."""
    text = text.str.strip_chars().str.replace(r"[Zz]$", "+00:00")
    aware = [text.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="us") for f in _AWARE]
    naive = [text.str.to_datetime(f, strict=False, time_unit="us").dt.replace_time_zone("UTC") for f in _NAIVE]
    day = text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.coalesce(*aware, *naive, day).dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(joined: linked.Joined, spec: models.EventSpec, carry: list[str]) -> tuple[pl.DataFrame, list[RowReject]]:
    """Given the joined rows, an event spec and the root fields to carry (identifiers), return one row
    per event (carry fields, _row, event_id, time, properties, nested as JSON) and the rejected ones.

    Raise InputError if a field the spec names is not in its file.
    """
    name = spec.file or joined.root
    label = joined.labels[name]
    _check(joined, name, [spec.id, *([spec.time] if spec.time else []), *spec.properties.values()])
    own = lambda f: pl.col(linked.column(name, f, joined.root))  # noqa: E731
    rows = joined.level(name, carry)
    events = rows.select(
        *carry, ROW, event_id=own(spec.id).str.strip_chars(),
        _time_text=own(spec.time) if spec.time else pl.lit(None, pl.String),
        properties=_object({k: own(v) for k, v in spec.properties.items()}))
    events = events.with_columns(time=iso_time(pl.col("_time_text")))
    nested = _nested(joined, name, spec)
    empty = orjson.dumps({n.name: [] for n in spec.nested}).decode()
    if nested is not None:
        events = events.join(nested, on=ROW, how="left", maintain_order="left")
    events = events.with_columns(nested=pl.col("nested").fill_null(empty) if nested is not None else pl.lit(empty))
    no_id = pl.col("event_id").is_null() | (pl.col("event_id") == "")
    bad_time = pl.col("_time_text").is_not_null() & (pl.col("_time_text") != "") & pl.col("time").is_null()
    rejects = [RowReject(label, n, spec.id, f"`{spec.id}` is empty: an event needs an id")
               for n in events.filter(no_id).get_column(ROW).to_list()]
    rejects += [RowReject(label, n, spec.time, f"`{spec.time}` is not a date or date-time (ISO 8601)", value[:200])
                for n, value in events.filter(~no_id & bad_time).select(ROW, "_time_text").iter_rows()]
    return events.filter(~no_id & ~bad_time).drop("_time_text"), rejects


def _check(joined: linked.Joined, name: str, fields: list[str]) -> None:
    missing = [f for f in fields if linked.column(name, f, joined.root) not in joined.frame.columns]
    if missing:
        raise InputError(f"event field(s) {', '.join(missing)} not in {joined.labels[name]}",
                         file=joined.labels[name])


def _object(fields: dict[str, pl.Expr]) -> pl.Expr:
    """A JSON object of strings (null for an empty cell) per row."""
    if not fields:
        return pl.lit("{}")
    return pl.struct(*(expr.alias(key) for key, expr in fields.items())).struct.json_encode()


def _nested(joined: linked.Joined, name: str, spec: models.EventSpec) -> pl.DataFrame | None:
    """Per event row (_row), its nested lists as one JSON object text; None without nested lists."""
    if not spec.nested:
        return None
    mine = linked.row_column(name, joined.root)
    lists = []
    for nested in spec.nested:
        _check(joined, nested.file, list(nested.properties.values()))
        theirs = linked.row_column(nested.file, joined.root)
        items = joined.frame.filter(pl.col(mine).is_not_null() & pl.col(theirs).is_not_null()).unique(
            subset=[mine, theirs], keep="first").sort(theirs)
        lists.append(items.group_by(mine, maintain_order=True).agg(pl.struct(
            *(pl.col(linked.column(nested.file, v, joined.root)).alias(k) for k, v in nested.properties.items())
        ).alias(nested.name)).rename({mine: ROW}))
    frame = lists[0]
    for other in lists[1:]:
        frame = frame.join(other, on=ROW, how="full", coalesce=True)
    names = [n.name for n in spec.nested]
    frame = frame.with_columns(pl.col(n).fill_null(pl.lit([], frame.schema[n])) for n in names)
    return frame.select(ROW, nested=pl.struct(*names).struct.json_encode())


def write(
    store: Store, conn: Connection, events: pl.DataFrame, spec: models.EventSpec, *,
    identifiers: list[tuple[str, str]], goal: str, now: float,
) -> Outcome:
    """Given built events, find each one's profile and insert or update it (and the product counts)."""
    outcome = Outcome()
    if events.is_empty():
        return outcome
    found = identity.resolve(lambda prop, values: queries.find_identities(store, conn, prop, values),
                             events, identifiers, allow_new=False)
    events = events.with_columns(profile_id=found.pids)
    outcome.unmatched = events.get_column("profile_id").null_count()
    # The same id twice in one file: the later row is the event's latest state.
    events = events.filter(pl.col("profile_id").is_not_null()).unique(subset="event_id", keep="last",
                                                                      maintain_order=True)
    if spec.product_store:
        _count_products(store, conn, events, spec)
    store_events.upsert_events(store, conn, events.with_columns(
        type=pl.lit(spec.type), goal=pl.lit(goal), updated_at=pl.lit(now)))
    outcome.written = events.height
    return outcome


def _count_products(store: Store, conn: Connection, events: pl.DataFrame, spec: models.EventSpec) -> None:
    """Add the new versions' product items and take back what the stored versions counted."""
    before = store_events.stored_events(store, conn, spec.type, events.get_column("event_id"))
    changes = [_skus(events, +1), _skus(before, -1)]
    counted = pl.concat(changes).group_by("sku").agg(pl.col("times_bought").sum(), pl.col("last_bought").max())
    store_events.count_products(store, conn, counted.filter(pl.col("times_bought") != 0).sort("sku"))


def _skus(events: pl.DataFrame, sign: int) -> pl.DataFrame:
    """Given events (time, nested JSON), return (sku, ±1, time) for every nested item with a sku."""
    rows = [(str(item["sku"]), sign, time if sign > 0 else None)
            for time, nested in events.select("time", "nested").iter_rows()
            for items in orjson.loads(nested).values() for item in items
            if isinstance(item, dict) and item.get("sku") not in (None, "")]
    schema = {"sku": pl.String, "times_bought": pl.Int64, "last_bought": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")
