"""Join a root file with its linked files into one frame of rows, and cut it back into levels.

A root file (customers) is chained to child files (orders, then order_lines) by link keys;
joins are one-to-many, left joins: a customer without orders keeps its row. In the joined
frame the root's fields keep their names and a child's fields are `<file>.<field>`; each
file's record number is kept (`_row` for the root, `_row@<file>` for a child), so that a
level (the distinct rows of one file) can be cut back out for its mappings and events.
Child rows whose key matches no parent row are orphans: counted and reported, not joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sftp_connector import csvio
from sftp_connector.config import models
from sftp_connector.errors import InputError, RowReject

LINK = "\x1flink"  # the join key column: no CSV field can be named so


@dataclass(frozen=True, slots=True)
class Part:
    """One file of a linked set, as read: its entry in the goal, its remote name and its rows."""

    entry: models.FileEntry
    label: str
    data: csvio.CsvData


@dataclass(slots=True)
class Joined:
    """The linked set's rows joined, and each child file's orphan rows."""

    frame: pl.DataFrame
    root: str
    labels: dict[str, str]
    """The remote file name of each file entry."""
    orphans: dict[str, list[RowReject]] = field(default_factory=dict)

    def level(self, name: str, keep: list[str]) -> pl.DataFrame:
        """Given a file entry and fields of other files to carry, return that file's distinct rows in file
        order: the `keep` fields, the file's own fields, and its record number as `_row`."""
        mine = row_column(name, self.root)
        own = [c for c in self.fields(name) if c not in keep]
        rows = self.frame.filter(pl.col(mine).is_not_null()).unique(subset=mine, keep="first", maintain_order=True)
        return rows.sort(mine).select(*keep, *own, pl.col(mine).alias(csvio.ROW))

    def fields(self, name: str) -> list[str]:
        """The joined frame's data columns of a file entry."""
        if name != self.root:
            return [c for c in self.frame.columns if c.startswith(f"{name}.")]
        children = tuple(f"{n}." for n in self.labels if n != self.root)
        return [c for c in self.frame.columns if not c.startswith("_") and not c.startswith(children)]


def row_column(name: str, root: str) -> str:
    """The joined frame's record-number column of a file entry."""
    return csvio.ROW if name == root else f"{csvio.ROW}@{name}"


def column(name: str, field_name: str, root: str) -> str:
    """The joined frame's column of a file entry's field."""
    return field_name if name == root else f"{name}.{field_name}"


def join(parts: list[Part]) -> Joined:
    """Given the files of a linked set (root first), return their rows joined along the links.

    Raise InputError naming both files when a link key is not a column of its file.
    """
    root = parts[0]
    frame = root.data.frame
    joined = Joined(frame, root.entry.name, {p.entry.name: p.label for p in parts})
    for part in _parents_first(parts):
        parent = part.entry.parent or root.entry.name
        link = part.entry.link
        assert link is not None
        key = column(parent, link.parent, root.entry.name)
        if key not in frame.columns:
            raise InputError(f"link key {link.parent} is not a column of {joined.labels[parent]} "
                             f"(linked to {part.label})", file=joined.labels[parent])
        if link.child not in part.data.columns:
            raise InputError(f"link key {link.child} is not a column of {part.label} "
                             f"(linked to {joined.labels[parent]})", file=part.label)
        child = _renamed(part)
        child_key = column(part.entry.name, link.child, root.entry.name)
        known = frame.get_column(key).filter(frame.get_column(key) != "").unique().implode()
        lost = child.filter(~pl.col(child_key).is_in(known).fill_null(False) | (pl.col(child_key) == ""))
        joined.orphans[part.entry.name] = [
            RowReject(part.label, number, link.child, f"no row of {joined.labels[parent]} has "
                      f"{link.parent} = {value!r}" if value else f"`{link.child}` is empty: no parent row", value)
            for number, value in lost.select(row_column(part.entry.name, root.entry.name), child_key).iter_rows()]
        frame = frame.with_columns(**{LINK: _cell(key)}).join(
            child.with_columns(**{LINK: _cell(child_key)}), on=LINK, how="left", maintain_order="left").drop(LINK)
    joined.frame = frame
    return joined


def _cell(col: str) -> pl.Expr:
    """A link key: empty cells never link."""
    return pl.when(pl.col(col) != "").then(pl.col(col))


def _renamed(part: Part) -> pl.DataFrame:
    name = part.entry.name
    return part.data.frame.rename({c: (f"{csvio.ROW}@{name}" if c == csvio.ROW else f"{name}.{c}")
                                   for c in part.data.frame.columns})


def _parents_first(parts: list[Part]) -> list[Part]:
    """The child files in an order where each comes after its parent (config order may differ)."""
    root = parts[0].entry.name
    placed, ordered, waiting = {root}, [], list(parts[1:])
    while waiting:
        ready = [p for p in waiting if (p.entry.parent or root) in placed]
        if not ready:
            raise InputError(f"files {', '.join(p.entry.name for p in waiting)} do not link up to the root file")
        for part in ready:
            ordered.append(part)
            placed.add(part.entry.name)
            waiting.remove(part)
    return ordered


def check_fields(goal: models.ImportGoal, columns: list[str], labels: dict[str, str]) -> None:
    """Raise InputError if a mapped, identifier or group field is in none of the set's files."""
    wanted = [m.field for m in goal.mappings]
    if isinstance(goal, models.ImportProfiles):
        wanted += [i.field for i in goal.identifiers] + [g.field for g in goal.groups]
    else:
        wanted.append(goal.identifier.field)
    missing = [f for f in dict.fromkeys(wanted) if f not in columns]
    if missing:
        raise InputError(f"field(s) {', '.join(missing)} not in the files {', '.join(labels.values())} "
                         f"(columns: {', '.join(c for c in columns if not c.startswith('_'))})")
