"""The rejects file of an imported file: each rejected row as it was read, with why, so that an operator can
see it, fix it and send it back.

`state/rejects/<run>/<file>.csv` (the remote name without its data extensions, made safe) holds the
file's own columns, then `_row`, `_column` and `_reason` (SPEC §8; several for a row with several bad
cells, joined by "; ") and `_record`: the raw text of a record that could not be split into the header's
fields (a field too many, a NUL byte, a field over the size cap; cut at 200 characters). A column of
one of those names in the file itself pushes ours to `__row`, and so on.

The rows are found by a second read of the decrypted file, done only when the file has rejects: the
merge never holds more than a batch, and neither does this. Rejected rows are customer data in
clear, so the folders are 0700 and the file 0600.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from sftp_connector import csvio
from sftp_connector.config import models
from sftp_connector.errors import RowReject
from sftp_connector.private import private_dir

REASONS = ("_row", "_column", "_reason", "_record")
_DATA_EXTENSIONS = (".gpg", ".pgp", ".asc", ".gz", ".zst", ".bz2", ".xz", ".zip", ".csv", ".tsv", ".txt")
_BATCH_ROWS = 100_000


def write(state_dir: Path, run: str, remote_path: str, source: Path, options: models.Csv,
          rejects: Sequence[RowReject], *, max_bytes: int, work_dir: Path) -> Path | None:
    """Given an imported file's decrypted copy and its rejects, write the rejects file; return its path
    (None when nothing was rejected). Raise errors.InputError as csvio.batches does."""
    if not rejects:
        return None
    wanted: dict[int, list[RowReject]] = {}
    for reject in rejects:
        wanted.setdefault(reject.row, []).append(reject)
    folder = private_dir(state_dir / "rejects", own=True)  # an older version made it with the default mode
    target = _free_name(private_dir(folder / run, own=True), file_name(remote_path))
    temp = target.with_name(target.name + ".tmp")
    temp.unlink(missing_ok=True)  # a leftover would keep its mode
    label = posixpath.basename(remote_path)
    with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", newline="",
              encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for line in _lines(source, options, label, wanted, max_bytes=max_bytes, work_dir=work_dir):
            writer.writerow(line)
    os.replace(temp, target)
    return target


def file_name(remote_path: str) -> str:
    """Given a remote path, return its rejects file's name: `<name>.csv`, the name without its data
    extensions (customers_1.csv.gz.gpg gives customers_1.csv), safe as one local path component."""
    name = posixpath.basename(remote_path)
    while name.lower().endswith(_DATA_EXTENSIONS):
        name = name[: name.rindex(".")]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:120] or "file"
    return name + ".csv"


def _free_name(folder: Path, name: str) -> Path:
    """Given a folder and a name, return the name, or `<stem>-2.csv`, `-3`… if a file of the run has it."""
    target, n = folder / name, 1
    while target.exists():
        n += 1
        target = folder / f"{name[:-4]}-{n}.csv"
    return target


def _lines(source: Path, options: models.Csv, label: str, wanted: dict[int, list[RowReject]], *,
           max_bytes: int, work_dir: Path) -> Iterator[list[str]]:
    """The header, then a line per rejected row in file order: its fields as read and why."""
    found: set[int] = set()
    width = 0
    for data in csvio.batches(source, options, label=label, max_bytes=max_bytes, work_dir=work_dir,
                              batch_rows=_BATCH_ROWS):
        if not width:
            width = len(data.columns)
            yield [*data.columns, *_reason_names(data.columns)]
        picked = data.frame.filter(pl.col(csvio.ROW).is_in(list(wanted)))
        lines = {row[-1]: [*(value or "" for value in row[:-1]), *_why(wanted[row[-1]], "")]
                 for row in picked.iter_rows()}
        for reject in data.rejects:  # unreadable records: kept as their raw text
            if reject.row in wanted:
                lines[reject.row] = [*[""] * width, *_why(wanted[reject.row], reject.value or "")]
        found |= lines.keys()
        for row in sorted(lines):
            yield lines[row]
    for row in sorted(wanted.keys() - found):  # not in the file as read (should not happen): why, at least
        yield [*[""] * width, *_why(wanted[row], "")]


def _why(rejects: list[RowReject], record: str) -> list[str]:
    return [str(rejects[0].row), "; ".join(dict.fromkeys(r.column for r in rejects if r.column)),
            "; ".join(dict.fromkeys(r.reason for r in rejects)), record]


def _reason_names(columns: Sequence[str]) -> list[str]:
    names = []
    for name in REASONS:
        while name in columns:
            name = "_" + name
        names.append(name)
    return names
