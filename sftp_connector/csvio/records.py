"""The record readers: polars first (fast path, checked for short records), stdlib `csv` for
runs holding malformed records (slow path), and the cutting of a file into batches of whole records.

Given the plain UTF-8 file and its `Layout` from `decode`, they return `CsvData`: the rows as
strings numbered in `ROW`, and a `RowReject` for each record that cannot be read. Split from
`decode` so that this module holds everything that parses records and nothing that touches
the file's bytes as a whole.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import polars as pl

from sftp_connector import errors
from sftp_connector.config import models
from sftp_connector.csvio.decode import BLOCK, ROW, UTF8_HINT, Feed, Layout, Source, open_source

_RAMP_FROM = 1 << 20  # bytes a run: smaller batches start at their full size (they fill the stages at once)
_SLOW_BYTES = 1 << 22  # runs of records larger than this are halved before taking the slow path
_PREVIEW = 200  # characters of a rejected record kept in its RowReject
MAX_FIELD = 131_072
"""A row with a longer cell is rejected, on both paths: stdlib csv's own limit (csv.field_size_limit()),
in bytes for polars. A profile property is no place for a megabyte value."""
_TOO_LONG = f"a field is longer than {MAX_FIELD} bytes"
MAX_CHUNK = 16 << 20
"""Bytes of records parsed at once, at most. A line longer than this (a field far over MAX_FIELD, most
likely) is not parsed at all: it is skipped in blocks and its row rejected, so that the memory a file
takes does not grow with the size of one field or line."""
_LONG_ROW = f"a row is longer than {MAX_CHUNK >> 20} MiB"
_POLARS_FAILED = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError)
_AS_TEXT: dict[str, Any] = {"has_header": False, "empty_string_is_null": False, "raise_if_empty": False, "glob": False}



@dataclass(frozen=True, slots=True)
class CsvData:
    """Rows of one CSV file or batch: strings with `_row` last; rows_read counts rejects too."""

    frame: pl.DataFrame
    columns: tuple[str, ...]
    rejects: tuple[errors.RowReject, ...]
    rows_read: int
    text_read: int = 0
    """Bytes of the (UTF-8) text read up to the end of this batch: with text_size, how far the file is."""
    text_size: int | None = None
    """The text's size in bytes, None while it is still being written (a decryption under way)."""


# ── records: polars, checked ─────────────────────────────────────────────────────────
def _span(chunk: bytes, layout: Layout, options: models.Csv, label: str, first_row: int) -> CsvData:
    """Given a run of whole records, return its rows numbered from first_row. Raise errors.InputError
    if a record is not valid UTF-8."""
    fast = read_fast(chunk, layout, options)
    if fast is not None:
        return numbered(*fast, layout, options, label, first_row)
    half = _cut(chunk[: len(chunk) // 2], options.quote.encode(), force=False) if len(chunk) > _SLOW_BYTES else 0
    if half:  # halve big runs until the bad records sit in small ones: the slow path is ~20x slower
        head = _span(chunk[:half], layout, options, label, first_row)
        return joined([head, _span(chunk[half:], layout, options, label, first_row + head.rows_read)], layout.names)
    frame, rejects, rows_read = _slow(iter(io.BytesIO(chunk)), layout.names, options, label, first_row)
    return CsvData(frame, layout.names, tuple(rejects), rows_read)


def joined(parts: list[CsvData], names: tuple[str, ...]) -> CsvData:
    """Given consecutive runs of one file, return them as one."""
    rejects = tuple(reject for part in parts for reject in part.rejects)
    return CsvData(pl.concat(part.frame for part in parts), names, rejects, sum(part.rows_read for part in parts))


def numbered(
    frame: pl.DataFrame, has_nul: bool, layout: Layout, options: models.Csv, label: str, first_row: int
) -> CsvData:
    """Given records as polars read them, return them numbered from first_row, with null values set
    and rows holding a NUL byte rejected."""
    rows_read = frame.height
    frame = frame.with_columns(pl.int_range(first_row, first_row + rows_read, dtype=pl.Int64).alias(ROW))
    rejects = _nul_rows(frame, layout.names, options.delimiter, label) if has_nul else []
    rejects += _long_rows(frame, layout.names, options.delimiter, label)
    if rejects:
        frame = frame.filter(~pl.col(ROW).is_in([reject.row for reject in rejects]))
        rejects.sort(key=lambda reject: reject.row)
    if nulls := options.null_values:
        frame = frame.with_columns(
            pl.when(pl.nth(i).is_in(nulls)).then(None).otherwise(pl.nth(i)).alias(n) for i, n in enumerate(layout.names)
        )
    return CsvData(frame, layout.names, tuple(rejects), rows_read)


def read_fast(chunk: bytes, layout: Layout, options: models.Csv) -> tuple[pl.DataFrame, bool] | None:
    """Given a run of whole records, return them as polars reads them and whether they hold a NUL byte,
    or None if polars failed or a record may have had too few fields."""
    if not (options.delimiter.isascii() and options.quote.isascii()):
        return None  # polars takes a one-byte delimiter and quote only
    # A leading newline keeps polars from taking data that starts like "x^" for zlib and inflating it.
    data, skip = b"\n" + chunk, 1
    schema = dict.fromkeys(layout.names, pl.String)
    try:
        frame = pl.read_csv(data, skip_lines=skip, schema=schema, separator=options.delimiter,
                            quote_char=options.quote, **_AS_TEXT)
    except _POLARS_FAILED:
        return None
    has_nul = b"\x00" in chunk
    if _too_few_fields(frame, data, skip, options.delimiter, has_nul=has_nul):
        return None
    return frame, has_nul


def _too_few_fields(frame: pl.DataFrame, data: bytes, skip: int, delimiter: str, *, has_nul: bool) -> bool:
    """Given polars' frame and the input it read, return whether a record may have had too few fields.

    polars fills missing fields with "", so only records with an empty last cell are suspect. Each
    must hold width - 1 delimiters plus those inside its values: checked line by line when every
    record is one line, else as a total over the file.
    """
    suspect = pl.last().fill_null("") == ""
    if frame.width < 2 or not frame.select(suspect.any()).item():
        return False
    inside = pl.sum_horizontal(pl.all().str.count_matches(delimiter, literal=True).cast(pl.Int64))
    with contextlib.suppress(*_POLARS_FAILED):  # one string per line ("\x00" never occurs unless has_nul)
        only_line = {"schema": {"line": pl.String}, "separator": "\x00", **_AS_TEXT, "quote_char": None}
        lines = pl.Series() if has_nul else pl.read_csv(data, skip_lines=skip, **only_line)["line"]
        if lines.len() == frame.height:
            suspects = frame.select(suspect).to_series()
            found = lines.filter(suspects).fill_null("").str.count_matches(delimiter, literal=True)
            return not (found == frame.filter(suspects).select(inside).to_series() + frame.width - 1).all()
    total = data.count(delimiter.encode())
    return total != (frame.width - 1) * frame.height + frame.select(inside.sum()).item()


def _nul_rows(frame: pl.DataFrame, names: tuple[str, ...], delimiter: str, label: str) -> list[errors.RowReject]:
    """Given numbered rows, return a RowReject for each row with a NUL byte in a field."""
    has_nul = pl.any_horizontal(pl.nth(range(len(names))).str.contains("\x00", literal=True))
    return [
        errors.RowReject(label, row[-1], None, "NUL byte", delimiter.join(row[:-1])[:_PREVIEW])
        for row in frame.filter(has_nul).iter_rows()
    ]


def _long_rows(frame: pl.DataFrame, names: tuple[str, ...], delimiter: str, label: str) -> list[errors.RowReject]:
    """Given numbered rows, return a RowReject for each row (without a NUL byte) with a field over MAX_FIELD."""
    length = pl.max_horizontal(pl.nth(range(len(names))).str.len_bytes())
    if not names or not frame.height or (frame.select(length.max()).item() or 0) <= MAX_FIELD:
        return []
    has_nul = pl.any_horizontal(pl.nth(range(len(names))).str.contains("\x00", literal=True))
    return [
        errors.RowReject(label, row[-1], None, _TOO_LONG, delimiter.join(row[:-1])[:_PREVIEW])
        for row in frame.filter((length > MAX_FIELD) & ~has_nul.fill_null(False)).iter_rows()
    ]


# ── records: stdlib csv, for malformed files ─────────────────────────────────────────
def _slow(
    lines: Iterator[bytes], names: tuple[str, ...], options: models.Csv, label: str, first_row: int
) -> tuple[pl.DataFrame, list[errors.RowReject], int]:
    """Given the lines of data records, return the good rows, the rejects and the record count.
    Raise errors.InputError at bytes that are not UTF-8."""
    good: list[list[str | None]] = []
    numbers: list[int] = []
    rejects: list[errors.RowReject] = []
    row, nulls = first_row - 1, set(options.null_values)
    try:
        for fields, reason, raw in _records(Feed(lines), options, len(names)):
            row += 1
            if reason is None:
                good.append([None if value in nulls else value for value in fields])
                numbers.append(row)
            else:
                rejects.append(errors.RowReject(label, row, None, reason, raw.rstrip("\r\n")[:_PREVIEW]))
    except UnicodeDecodeError as exc:
        raise errors.InputError(f"row {row + 1}: {UTF8_HINT}", file=label) from exc
    columns = zip(*good, strict=True) if good else [()] * len(names)
    series = [pl.Series(name, column, dtype=pl.String) for name, column in zip(names, columns, strict=True)]
    return pl.DataFrame([*series, pl.Series(ROW, numbers, dtype=pl.Int64)]), rejects, row - first_row + 1


def _records(feed: Feed, options: models.Csv, width: int) -> Iterator[tuple[list[str], str | None, str]]:
    """Given fed lines, yield (fields, reject reason or None, raw text) per record, blank lines skipped.

    A record that ran across lines and could not be parsed had an unbalanced quote: only its first
    line is rejected, and the lines after it are read again. One that parsed (its quotes closed
    cleanly) but has the wrong field count is rejected whole, so its quoted lines never become rows.
    """
    reader = csv.reader(feed, delimiter=options.delimiter, quotechar=options.quote, strict=True)
    while True:
        feed.taken = []
        try:
            fields, error = next(reader), ""
        except StopIteration:
            return
        except csv.Error as exc:
            fields, error = [], str(exc)
        if not fields and not error:
            if width > 1:
                continue
            fields = [""]
        raw = "".join(feed.taken)
        if not error and len(fields) == width:
            yield fields, ("NUL byte" if "\x00" in raw else None), raw
        elif "field larger than field limit" in error:
            yield fields, _TOO_LONG, raw[:_PREVIEW]
        elif error and (len(feed.taken) > 1 or "end of data" in error):
            feed.resync()
            yield fields, "unbalanced quote", feed.taken[0]
        else:
            reason = f"malformed record ({error})" if error else f"expected {width} fields, found {len(fields)}"
            yield fields, reason, raw


# ── batches ──────────────────────────────────────────────────────────────────────────
def batched(text: Source, layout: Layout, options: models.Csv, label: str, batch_rows: int) -> Iterator[CsvData]:
    """Given the UTF-8 file, yield its rows in batches of about batch_rows (at least one batch)."""
    first_row = 1
    size = text.stat().st_size if isinstance(text, Path) else None
    for chunk, end in _chunks(text, layout.offset, options, batch_rows):
        if isinstance(chunk, _LongLine):
            data = CsvData(_no_rows(layout.names), layout.names, (chunk.reject(label, first_row),), 1)
        else:
            data = _span(chunk, layout, options, label, first_row)
        first_row += data.rows_read
        yield replace(data, text_read=end, text_size=size)
    if first_row == 1:  # no records: one empty batch still carries the columns
        yield _span(b"", layout, options, label, first_row)


@dataclass(frozen=True, slots=True)
class _LongLine:
    """A line longer than MAX_CHUNK, skipped unparsed: its start (for the reject's preview) and why."""

    head: bytes
    reason: str

    def reject(self, label: str, row: int) -> errors.RowReject:
        return errors.RowReject(label, row, None, self.reason, self.head.decode("utf-8", "replace")[:_PREVIEW])


def _no_rows(names: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(schema={**dict.fromkeys(names, pl.String), ROW: pl.Int64})


def _chunks(text: Source, offset: int, options: models.Csv, batch_rows: int) -> Iterator[tuple[bytes | _LongLine, int]]:
    """Given the UTF-8 file and where its data starts, yield runs of whole records, about
    batch_rows each and at most MAX_CHUNK bytes, each cut at a newline after an even number of
    quotes; and, for a line longer than MAX_CHUNK, a _LongLine in its place; each with the offset it ends at.

    Runs of a megabyte or more start smaller (an eighth, a quarter, a half): a merge's stages
    work on different batches at once, and small first batches get them all working sooner.
    """
    needle = options.quote.encode()
    with open_source(text) as file:
        file.seek(offset)
        sample = file.read(BLOCK)
        base = min(max(1, batch_rows * len(sample) // max(sample.count(b"\n"), 1)), MAX_CHUNK)
        step = size = base if base < _RAMP_FROM else base // 8
        while True:
            file.seek(offset)
            block = file.read(size)
            if b"\n" not in block and len(block) >= MAX_CHUNK:  # one line longer than a chunk may be
                skipped, line = _skip_line(file, block, options.delimiter.encode())
                yield line, offset + skipped
                offset, size = offset + skipped, step
                continue
            if len(block) < size:  # the rest of the file
                if block:
                    yield block, offset + len(block)
                return
            cut = _cut(block, needle, force=size >= min(8 * max(base, BLOCK), MAX_CHUNK))
            if cut:
                yield block[:cut], offset + cut
                step = min(base, 2 * step)
            offset, size = offset + cut, step if cut else min(2 * size, MAX_CHUNK)


def _skip_line(file: IO[bytes], block: bytes, delimiter: bytes) -> tuple[int, _LongLine]:
    """Given the file positioned after a block that starts a line longer than MAX_CHUNK, read on to the
    line's end, a block at a time; return the bytes it spans (its newline included) and the _LongLine.
    The reason is the field cap's if a run of more than MAX_FIELD bytes holds no delimiter, else the row's."""
    long_field = re.compile(b"[^" + re.escape(delimiter) + b"\n]{" + str(MAX_FIELD + 1).encode() + b"}")
    head, spanned, run_tail, too_long = block[:_PREVIEW * 4], 0, b"", False
    while block:
        end = block.find(b"\n")
        part = block if end < 0 else block[: end + 1]
        spanned += len(part)
        too_long = too_long or long_field.search(run_tail + part) is not None
        run_tail = part[-(MAX_FIELD + 1):]
        if end >= 0:
            break
        block = file.read(BLOCK)
    return spanned, _LongLine(head, _TOO_LONG if too_long else _LONG_ROW)


def _cut(data: bytes, quote: bytes, *, force: bool) -> int:
    """Given whole-record bytes and more, return the length up to the last newline after an even
    number of quotes; 0 if none is near the end, or the last newline if force."""
    total, end = data.count(quote), data.rfind(b"\n")
    after = data.count(quote, end) if end >= 0 else 0
    for _ in range(1000):
        if end < 0:
            return 0
        if (total - after) % 2 == 0:
            return end + 1
        previous = data.rfind(b"\n", 0, end)
        after += data.count(quote, max(previous, 0), end)
        end = previous
    return data.rfind(b"\n") + 1 if force else 0
