"""The files an export writes: profile pages rendered into the goal's columns, and events files,
as CSV (appended page by page) or Parquet (multi-valued properties as list columns).

CSV cells hold multi-values joined with the goal's separator; with `escape_formulas` a cell
that a spreadsheet would run as a formula gets a leading `'`. Parquet keeps types: profile
ids as integers, segment names as lists of strings, property values as lists of numbers
(Float64) where every value of the property in the file is a number (a `sum`, stored as
JSON numbers), and as lists of strings otherwise: digits stored as text (a zip code) stay
text. The choice is made for the whole file, so pages are kept as the store's JSON until
the file is closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from sftp_connector import rules, sftp
from sftp_connector.config import models

SHOWN_ROWS = 5  # rows a dry run prints


@dataclass(slots=True)
class Written:
    """A local file ready to upload: its remote name, where it is, how many rows, the first ones."""

    name: str
    path: Path
    rows: int
    head: pl.DataFrame | None = None


def file_name(goal: models.ExportProfiles, name: str) -> str:
    """The goal's file name for its format: a Parquet export's `.csv` becomes `.parquet` (once)."""
    if goal.format == "parquet":
        return split_extension(name)[0] + ".parquet"
    return name


def split_extension(name: str) -> tuple[str, str]:
    """Given an export file name, return its stem and its data extension (`.csv`, `.parquet` or none)."""
    for ext in (".csv", ".parquet"):
        if name.lower().endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return name, ""


def property_of(connector: models.Connector, column: models.ExportColumn) -> str | None:
    """The property a column reads (permission_level reads privacy.permission_property), or None."""
    if column.value == "permission_level":
        return connector.privacy.permission_property
    return column.property


def segment_names(connector: models.Connector, column: models.ExportColumn) -> list[str]:
    """The segments a segments column names (`value: segments`: every segment)."""
    if column.value == "segments":
        return list(connector.segments)
    return list(column.segments or [])


@dataclass(slots=True)
class Sink:
    """Where rendered pages go: appended to a CSV file, or gathered and written as one Parquet file."""

    path: Path
    name: str
    goal: models.ExportProfiles
    rows: int = 0
    head: pl.DataFrame | None = None
    pages: list[pl.DataFrame] = field(default_factory=list)
    _started: bool = False

    def add(self, page: pl.DataFrame) -> None:
        self.rows += page.height
        if self.head is None:
            self.head = _typed(page.head(SHOWN_ROWS), self.goal)
        if self.goal.format == "parquet":
            self.pages.append(page)
            return
        with self.path.open("ab" if self._started else "wb") as out:
            _write_csv(out, page, self.goal.csv, header=self.goal.csv.header and not self._started)
        self._started = True

    def close(self) -> Written:
        """Finish the file (with the header alone when no page came) and return it."""
        if self.goal.format == "parquet":
            frame = _typed(pl.concat(self.pages), self.goal) if self.pages else _empty(self.goal, lists=True)
            frame.write_parquet(self.path, compression="zstd")
        elif not self._started:
            with self.path.open("wb") as out:
                _write_csv(out, _empty(self.goal, lists=False), self.goal.csv, header=self.goal.csv.header)
        return Written(self.name, self.path, self.rows, self.head)


def _empty(goal: models.ExportProfiles, *, lists: bool) -> pl.DataFrame:
    if not lists:
        return pl.DataFrame(schema=dict.fromkeys((c.column for c in goal.columns), pl.String))
    return pl.DataFrame(schema={c.column: _parquet_type(c) for c in goal.columns})


def _typed(frame: pl.DataFrame, goal: models.ExportProfiles) -> pl.DataFrame:
    """Given rendered rows of a Parquet export (property columns still JSON text), decode each property
    column: to lists of numbers if it holds values and every one is a JSON number, else to lists of strings."""
    if goal.format != "parquet":
        return frame
    return frame.with_columns(_decoded(frame[c.column]) for c in goal.columns if _is_property_json(c))


def _decoded(json_text: pl.Series) -> pl.Series:
    held = json_text.drop_nulls().filter(json_text.drop_nulls() != "[]")
    numbers = held.len() > 0 and not held.str.contains('"').any()  # values, and none of them quoted: numbers
    return json_text.str.json_decode(pl.List(pl.Float64 if numbers else pl.String)).fill_null([])


def _is_property_json(column: models.ExportColumn) -> bool:
    return column.text is None and column.value not in ("profile_id", "segments") and column.segments is None


def _parquet_type(column: models.ExportColumn) -> pl.DataType:
    if column.value == "profile_id":
        return pl.Int64()
    if column.text is not None:
        return pl.String()
    return pl.List(pl.String)


def page_schema(properties: list[str], flags: list[str]) -> dict[str, pl.DataType]:
    """The columns of a page of profiles to export: id, each property's cell (JSON text), each segment's flag."""
    return {"id": pl.Int64(), **{f"v{i}": pl.String() for i in range(len(properties))},
            **{f"s{i}": pl.Int64() for i in range(len(flags))}}


def render(connector: models.Connector, goal: models.ExportProfiles, properties: list[str], flags: list[str],
           frame: pl.DataFrame) -> pl.DataFrame:
    """Given a page of profiles (page_schema), return the goal's columns: strings for CSV; for Parquet, typed
    ids and segment lists, with property values left as the store's JSON text for the Sink to decode."""
    lists = goal.format == "parquet"
    sep = goal.csv.multi_value_separator
    where = {prop: f"v{i}" for i, prop in enumerate(properties)}
    flag = {name: f"s{i}" for i, name in enumerate(flags)}

    def value(column: models.ExportColumn) -> pl.Expr:
        if column.text is not None:
            return pl.lit(column.text)
        if column.value == "profile_id":
            return pl.col("id") if lists else pl.col("id").cast(pl.String)
        names = segment_names(connector, column)
        if column.value == "segments" or column.segments is not None:
            held = pl.concat_list(pl.when(pl.col(flag[n]) == 1).then(pl.lit(n)) for n in names).list.drop_nulls() \
                if names else pl.lit([], pl.List(pl.String))
            return held if lists else held.list.join(sep)
        cell = pl.col(where[property_of(connector, column) or ""])
        return cell if lists else rules.decode(cell).list.join(sep)  # Parquet decodes when the file closes

    return frame.select(value(c).alias(f"c{i}") for i, c in enumerate(goal.columns)).rename(
        {f"c{i}": c.column for i, c in enumerate(goal.columns)})


def _write_csv(out: Any, frame: pl.DataFrame, options: models.ExportCsv, *, header: bool) -> None:
    if options.escape_formulas:
        frame = frame.with_columns(_defused(pl.col(c)).alias(c) for c, t in frame.schema.items() if t == pl.String)
    frame.write_csv(out, separator=options.delimiter, quote_char=options.quote, include_header=header)


def _defused(value: pl.Expr) -> pl.Expr:
    """A text column with formula-looking values prefixed by `'` (a plain number such as -5 stays as it is)."""
    risky = value.str.contains(r"^[=+\-@\t\r]") & ~value.str.contains(r"^[+-]?[0-9]+(\.[0-9]+)?$")
    return pl.when(risky).then(pl.lit("'") + value).otherwise(value)


def event_files(work_dir: Path, goal: models.ExportProfiles, name: str, kind: str,
                rows: list[tuple[Any, ...]]) -> list[Written]:
    """One file of the events of a type (profile_id, id, time, its properties) and one per nested list
    (`<type>_id`, then the items' properties), named `<stem>_<type>[_<list>]<ext>`."""
    stem, ext = split_extension(name)
    events: list[dict[str, Any]] = []
    nested: dict[str, list[dict[str, Any]]] = {}
    for pid, event_id, at, properties, items in rows:
        events.append({"profile_id": str(pid), "id": event_id, "time": at or "", **orjson.loads(properties)})
        for list_name, entries in orjson.loads(items).items():
            nested.setdefault(list_name, []).extend({f"{kind}_id": event_id, **entry} for entry in entries)
    files = [_table(work_dir, goal, f"{stem}_{kind}{ext}", events, ["profile_id", "id", "time"])]
    files += [_table(work_dir, goal, f"{stem}_{kind}_{list_name}{ext}", entries, [f"{kind}_id"])
              for list_name, entries in nested.items()]
    return files


def _table(work_dir: Path, goal: models.ExportProfiles, name: str, records: list[dict[str, Any]],
           first: list[str]) -> Written:
    """Write records (dicts of strings) with the columns `first`, then every other key in order seen."""
    name = file_name(goal, name)
    keys = list(dict.fromkeys([*first, *(k for r in records for k in r)]))
    frame = pl.DataFrame({k: [_cell(r.get(k)) for r in records] for k in keys}, schema=dict.fromkeys(keys, pl.String))
    local = work_dir / sftp.local_name(name)
    if goal.format == "parquet":
        frame.write_parquet(local, compression="zstd")
    else:
        with local.open("wb") as out:
            _write_csv(out, frame, goal.csv, header=goal.csv.header)
    return Written(name, local, frame.height, frame.head(SHOWN_ROWS))


def _cell(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
