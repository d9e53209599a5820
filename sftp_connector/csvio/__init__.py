"""Read partner CSV files into frames of strings; write export CSV files atomically.

`read` and `batches` take one local file as the transport and crypto stages left it:
decompress (capped at max_file_bytes) → transcode to UTF-8 if needed → header → polars
reader (fast path) → field-count check → stdlib `csv` (slow path, malformed files only)
→ NUL rows → null values. Data columns come back as `pl.String` in file order, then `_row`:
the 1-based data record number (header excluded) that messages and the rejects file quote.
Unreadable records become `errors.RowReject` values; a file that cannot be read at all
raises `errors.InputError`. Multi-value cells stay whole: the merge stage splits them.

This module is the front: `read`, `batches` and `write`. `decode` prepares the file (decompress,
transcode, header) and `records` reads its records (fast and slow paths, batching).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Generator
from pathlib import Path

import polars as pl

from sftp_connector.config import models
from sftp_connector.csvio import decode, records
from sftp_connector.csvio.decode import ROW, Source
from sftp_connector.csvio.records import CsvData

__all__ = ["ROW", "CsvData", "Source", "batches", "read", "write"]


def read(path: Path, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path) -> CsvData:
    """Given a local CSV file and its `csv:` options, return all its rows as strings with `_row`.

    `label` names the file in messages; temp files go to work_dir and are gone on return. Raise
    errors.InputError if it does not decompress within max_bytes, is not in the declared
    encoding, or has no usable header row.
    """
    with contextlib.ExitStack() as temps:
        text = decode.prepare(path, options, label=label, max_bytes=max_bytes, work_dir=work_dir, temps=temps)
        layout = decode.layout(text, options, label)
        # In runs of at most records.MAX_CHUNK bytes: memory does not grow with one huge line, and only runs
        # with bad records take the slow path.
        return records.joined(list(records.batched(text, layout, options, label, 250_000)), layout.names)


def batches(
    path: Source, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path, batch_rows: int = 250_000
) -> Generator[CsvData, None, None]:
    """Given the arguments of `read`, yield at least one batch of about batch_rows rows each, `_row`
    going on across batches; temps live until the generator ends. Raise as `read` does, when iterated.

    path may be a file still being written, given as how to open it (see `decode.Source`)."""
    with contextlib.ExitStack() as temps:
        text = decode.prepare(path, options, label=label, max_bytes=max_bytes, work_dir=work_dir, temps=temps)
        yield from records.batched(text, decode.layout(text, options, label), options, label, batch_rows)


def write(frame: pl.DataFrame, path: Path, *, delimiter: str = ",", header: bool = True, quote: str = '"') -> None:
    """Given a frame and a local path, write the frame there as CSV (nulls as empty cells), atomically.
    Raise OSError if the directory is not writable; the temp file is removed, path left as it was."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            frame.write_csv(out, separator=delimiter, quote_char=quote, include_header=header)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
