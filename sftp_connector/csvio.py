"""Read partner CSV files into frames of strings; write export CSV files atomically.

`read` and `batches` take one local file as the transport and crypto stages left it:
decompress (capped at max_file_bytes) → transcode to UTF-8 if needed → header → polars
reader (fast path) → field-count check → stdlib `csv` (slow path, malformed files only)
→ NUL rows → null values. Data columns come back as `pl.String` in file order, then `_row`:
the 1-based data record number (header excluded) that messages and the rejects file quote.
Unreadable records become `errors.RowReject` values; a file that cannot be read at all
raises `errors.InputError`. Multi-value cells stay whole: the merge stage splits them.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import io
import os
import re
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import polars as pl

from sftp_connector import errors
from sftp_connector.config import models

ROW = "_row"
_BLOCK = 1 << 20  # bytes per read when copying, transcoding or scanning
_SLOW_BYTES = 1 << 22  # runs of records larger than this are halved before taking the slow path
_PREVIEW = 200  # characters of a rejected record kept in its RowReject
_MAGIC = {"gzip": rb"\x1f\x8b", "bz2": rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", "zip": rb"PK\x03\x04"}
_CORRUPT = (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError)
_POLARS_FAILED = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError)
_POLARS_SNIFFS = (b"\x1f\x8b", b"x\x01", b"x^", b"x\x9c", b"x\xda", b"(\xb5")  # it decompresses what starts so
_AS_TEXT: dict[str, Any] = {"has_header": False, "empty_string_is_null": False, "raise_if_empty": False, "glob": False}
_UTF8_HINT = "not valid utf-8; set csv.encoding, e.g. cp1252"

_Source = Path | bytes  # a whole UTF-8 file, or one batch of its data records


@dataclass(frozen=True, slots=True)
class CsvData:
    """Rows of one CSV file or batch: strings with `_row` last; rows_read counts rejects too."""

    frame: pl.DataFrame
    columns: tuple[str, ...]
    rejects: tuple[errors.RowReject, ...]
    rows_read: int


@dataclass(frozen=True, slots=True)
class _Layout:
    """Column names, and where the data records start: after `lines` lines, or `offset` bytes."""

    names: tuple[str, ...]
    lines: int
    offset: int


def read(path: Path, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path) -> CsvData:
    """Given a local CSV file and its `csv:` options, return all its rows as strings with `_row`.

    `label` names the file in messages; temp files go to work_dir and are gone on return. Raise
    errors.InputError if it does not decompress within max_bytes, is not in the declared
    encoding, or has no usable header row.
    """
    with contextlib.ExitStack() as temps:
        text = _prepare(path, options, label=label, max_bytes=max_bytes, work_dir=work_dir, temps=temps)
        layout = _layout(text, options, label)
        fast = _fast(text, layout, options)
        if fast is not None:
            return _numbered(*fast, layout, options, label, first_row=1)
        # polars cannot read it all: read it in runs, so that only runs with bad records take the slow path
        return _joined(list(_batches(text, layout, options, label, 250_000)), layout.names)


def batches(
    path: Path, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path, batch_rows: int = 250_000
) -> Iterator[CsvData]:
    """Given the arguments of `read`, yield at least one batch of about batch_rows rows each, `_row`
    going on across batches; temps live until the generator ends. Raise as `read` does, when iterated."""
    with contextlib.ExitStack() as temps:
        text = _prepare(path, options, label=label, max_bytes=max_bytes, work_dir=work_dir, temps=temps)
        yield from _batches(text, _layout(text, options, label), options, label, batch_rows)


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


# ── decompress and transcode ─────────────────────────────────────────────────────────
def _prepare(
    path: Path, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path, temps: contextlib.ExitStack
) -> Path:
    """Given the local file, return it as plain UTF-8: itself or a temp. Raise errors.InputError if
    it is too big, corrupt, or not in the declared encoding."""
    kind = options.compression
    if kind == "auto":
        with path.open("rb") as file:
            head = file.read(10)
        kind = next((found for found, magic in _MAGIC.items() if re.match(magic, head)), "none")
    if kind == "none" and path.stat().st_size > max_bytes:
        raise errors.InputError(f"file size exceeds max_file_bytes ({max_bytes} bytes)", file=label)
    if kind != "none":
        plain = _temp(work_dir, temps)
        _decompress(path, plain, kind, label=label, max_bytes=max_bytes)
        path = plain
    if codecs.lookup(options.encoding).name not in ("utf-8", "utf-8-sig"):
        utf8 = _temp(work_dir, temps)
        _transcode(path, utf8, options, label)
        if kind != "none":
            path.unlink()  # free the disk early: the decompressed copy is no longer needed
        path = utf8
    return path


def _temp(work_dir: Path, temps: contextlib.ExitStack) -> Path:
    """Given the work directory, return a new empty temp file there that `temps` removes."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=work_dir, prefix=".csvio-", suffix=".tmp")
    os.close(fd)
    temps.callback(Path(name).unlink, missing_ok=True)
    return Path(name)


@contextlib.contextmanager
def _opened(path: Path, kind: str, label: str) -> Iterator[IO[bytes]]:
    """Given a compressed file, yield its content. Raise errors.InputError if a zip holds not one file."""
    if kind != "zip":
        with gzip.open(path, "rb") if kind == "gzip" else bz2.open(path, "rb") as stream:
            yield stream
        return
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            raise errors.InputError(f"zip archive must hold exactly one file, found {len(members)}", file=label)
        with archive.open(members[0]) as stream:
            yield stream


def _decompress(src: Path, dst: Path, kind: str, *, label: str, max_bytes: int) -> None:
    """Given a compressed file, write its content to dst, stopping as soon as it passes max_bytes.
    Raise errors.InputError if it is corrupt or too big."""
    total = 0
    try:
        with _opened(src, kind, label) as stream, dst.open("wb") as out:
            while block := stream.read(_BLOCK):
                total += len(block)
                if total > max_bytes:
                    raise errors.InputError(f"decompressed size exceeds max_file_bytes ({max_bytes} bytes)", file=label)
                out.write(block)
    except _CORRUPT as exc:
        raise errors.InputError(f"cannot decompress ({kind}): {exc}", file=label) from exc


def _transcode(src: Path, dst: Path, options: models.Csv, label: str) -> None:
    """Given a file in csv.encoding, write it to dst as UTF-8, streamed. Raise errors.InputError
    naming the record (else the byte offset) of the first invalid bytes."""
    decoder = codecs.getincrementaldecoder(options.encoding)("strict")
    offset = 0
    with src.open("rb") as source, dst.open("w", encoding="utf-8", newline="") as out:
        while True:
            block = source.read(_BLOCK)
            try:
                out.write(decoder.decode(block, final=not block))
            except UnicodeDecodeError as exc:
                out.write(exc.object[: exc.start].decode(options.encoding, "replace"))
                bad = exc
                break
            if not block:
                return
            offset += len(block)
    where = _record_at_end(dst, options) or f"byte {offset + bad.start}"
    found = bad.object[bad.start : bad.end].hex()
    message = f"{where}: not valid {options.encoding} (byte 0x{found}); check csv.encoding"
    raise errors.InputError(message, file=label) from bad


def _record_at_end(text: Path, options: models.Csv) -> str | None:
    """Given a UTF-8 file cut where bad bytes start, return "row N" or "header row" for the record
    holding them, or None if the records cannot be counted."""
    try:
        with text.open(encoding="utf-8", newline="") as file:
            reader = csv.reader(file, delimiter=options.delimiter, quotechar=options.quote)
            count = sum(1 for record in reader if record)
    except csv.Error:
        return None
    with text.open("rb") as file:
        file.seek(max(text.stat().st_size - 1, 0))
        row = count + (file.read(1) in (b"", b"\n")) - options.header
    return f"row {row}" if row > 0 else "header row"


# ── header ───────────────────────────────────────────────────────────────────────────
def _layout(text: Path, options: models.Csv, label: str) -> _Layout:
    """Given the UTF-8 file, return its column names and where its data records start. Raise
    errors.InputError if the header row is missing or unreadable, or a name is empty or doubled."""
    with text.open("rb") as file:
        start = len(codecs.BOM_UTF8) if file.read(3) == codecs.BOM_UTF8 else 0
        if not options.header:
            return _Layout(_checked(options.columns or [], "csv.columns", label), 0, start)
        file.seek(start)
        feed = _Feed(iter(file))
        reader = csv.reader(feed, delimiter=options.delimiter, quotechar=options.quote, strict=True)
        try:
            names = next((record for record in reader if record), None)
        except UnicodeDecodeError as exc:
            raise errors.InputError(f"header row: {_UTF8_HINT}", file=label) from exc
        except csv.Error as exc:
            raise errors.InputError(f"header row cannot be read: {exc}", file=label) from exc
    if names is None:
        raise errors.InputError("empty file: no header row", file=label)
    size = sum(len(line.encode()) for line in feed.taken)  # the header and any blank lines before it
    return _Layout(_checked(names, "header", label), len(feed.taken), start + size)


def _checked(raw: list[str], where: str, label: str) -> tuple[str, ...]:
    """Given column names, return them trimmed. Raise errors.InputError if one is empty, doubled or `_row`."""
    names = tuple(name.strip() for name in raw)
    if empty := [str(number) for number, name in enumerate(names, 1) if not name]:
        raise errors.InputError(f"{where}: empty column name (column {', '.join(empty)})", file=label)
    if twice := [name for name, count in Counter(names).items() if count > 1]:
        raise errors.InputError(f"{where}: duplicate column names: {', '.join(twice)}", file=label)
    if ROW in names:
        raise errors.InputError(f"{where}: column name {ROW} is reserved", file=label)
    return names


# ── records: polars, checked ─────────────────────────────────────────────────────────
def _span(chunk: bytes, layout: _Layout, options: models.Csv, label: str, first_row: int) -> CsvData:
    """Given a run of whole records, return its rows numbered from first_row. Raise errors.InputError
    if a record is not valid UTF-8."""
    fast = _fast(chunk, layout, options)
    if fast is not None:
        return _numbered(*fast, layout, options, label, first_row)
    half = _cut(chunk[: len(chunk) // 2], options.quote.encode(), force=False) if len(chunk) > _SLOW_BYTES else 0
    if half:  # halve big runs until the bad records sit in small ones: the slow path is ~20x slower
        head = _span(chunk[:half], layout, options, label, first_row)
        return _joined([head, _span(chunk[half:], layout, options, label, first_row + head.rows_read)], layout.names)
    frame, rejects, rows_read = _slow(iter(io.BytesIO(chunk)), layout.names, options, label, first_row)
    return CsvData(frame, layout.names, tuple(rejects), rows_read)


def _joined(parts: list[CsvData], names: tuple[str, ...]) -> CsvData:
    """Given consecutive runs of one file, return them as one."""
    rejects = tuple(reject for part in parts for reject in part.rejects)
    return CsvData(pl.concat(part.frame for part in parts), names, rejects, sum(part.rows_read for part in parts))


def _numbered(
    frame: pl.DataFrame, has_nul: bool, layout: _Layout, options: models.Csv, label: str, first_row: int
) -> CsvData:
    """Given records as polars read them, return them numbered from first_row, with null values set
    and rows holding a NUL byte rejected."""
    rows_read = frame.height
    frame = frame.with_columns(pl.int_range(first_row, first_row + rows_read, dtype=pl.Int64).alias(ROW))
    rejects = _nul_rows(frame, layout.names, options.delimiter, label) if has_nul else []
    if rejects:
        frame = frame.filter(~pl.col(ROW).is_in([reject.row for reject in rejects]))
    if nulls := options.null_values:
        frame = frame.with_columns(
            pl.when(pl.nth(i).is_in(nulls)).then(None).otherwise(pl.nth(i)).alias(n) for i, n in enumerate(layout.names)
        )
    return CsvData(frame, layout.names, tuple(rejects), rows_read)


def _fast(source: _Source, layout: _Layout, options: models.Csv) -> tuple[pl.DataFrame, bool] | None:
    """Given a whole file or a batch, return its records as polars reads them and whether it holds
    a NUL byte, or None if polars failed or a record may have had too few fields."""
    if not (options.delimiter.isascii() and options.quote.isascii()):
        return None  # polars takes a one-byte delimiter and quote only
    data, skip = _for_polars(source, layout)
    schema = dict.fromkeys(layout.names, pl.String)
    try:
        quoting = {"separator": options.delimiter, "quote_char": options.quote}
        frame = pl.read_csv(data, skip_lines=skip, schema=schema, **quoting, **_AS_TEXT)
    except _POLARS_FAILED:
        return None
    has_nul = _has_nul(source, layout.offset)
    offset = layout.offset if isinstance(data, Path) else 0
    if _too_few_fields(frame, data, skip, offset, options.delimiter, has_nul=has_nul):
        return None
    return frame, has_nul


def _too_few_fields(
    frame: pl.DataFrame, data: _Source, skip: int, offset: int, delimiter: str, *, has_nul: bool
) -> bool:
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
    total = _count(data, offset, delimiter.encode())
    return total != (frame.width - 1) * frame.height + frame.select(inside.sum()).item()


def _for_polars(source: _Source, layout: _Layout) -> tuple[_Source, int]:
    """Given a file or a batch, return what to hand polars and how many lines it must skip. A
    leading newline keeps polars from taking data that starts like "x^" for zlib and inflating it."""
    if isinstance(source, Path):
        with source.open("rb") as file:
            if file.read(2) not in _POLARS_SNIFFS:
                return source, layout.lines
        source = source.read_bytes()[layout.offset :]
    return b"\n" + source, 1


def _has_nul(source: _Source, offset: int) -> bool:
    """Given a file (from offset) or a batch, return whether it holds a NUL byte."""
    if isinstance(source, bytes):
        return b"\x00" in source
    with source.open("rb") as file:
        file.seek(offset)
        return any(b"\x00" in block for block in iter(lambda: file.read(8 * _BLOCK), b""))


def _count(source: _Source, offset: int, needle: bytes) -> int:
    """Given a file (from offset) or a batch, return how often needle occurs in it."""
    if isinstance(source, bytes):
        return source.count(needle)
    with source.open("rb") as file:
        file.seek(offset)
        return sum(block.count(needle) for block in iter(lambda: file.read(8 * _BLOCK), b""))


def _nul_rows(frame: pl.DataFrame, names: tuple[str, ...], delimiter: str, label: str) -> list[errors.RowReject]:
    """Given numbered rows, return a RowReject for each row with a NUL byte in a field."""
    has_nul = pl.any_horizontal(pl.nth(range(len(names))).str.contains("\x00", literal=True))
    return [
        errors.RowReject(label, row[-1], None, "NUL byte", delimiter.join(row[:-1])[:_PREVIEW])
        for row in frame.filter(has_nul).iter_rows()
    ]


# ── records: stdlib csv, for malformed files ─────────────────────────────────────────
class _Feed:
    """Lines decoded for csv.reader; `taken` holds those of the current record, `resync` pushes
    all of them but the first back, to be read again."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._pushed: list[str] = []
        self.taken: list[str] = []

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        line = self._pushed.pop() if self._pushed else next(self._lines).decode("utf-8")
        self.taken.append(line)
        return line

    def resync(self) -> None:
        self._pushed.extend(reversed(self.taken[1:]))


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
        for fields, reason, raw in _records(_Feed(lines), options, len(names)):
            row += 1
            if reason is None:
                good.append([None if value in nulls else value for value in fields])
                numbers.append(row)
            else:
                rejects.append(errors.RowReject(label, row, None, reason, raw.rstrip("\r\n")[:_PREVIEW]))
    except UnicodeDecodeError as exc:
        raise errors.InputError(f"row {row + 1}: {_UTF8_HINT}", file=label) from exc
    columns = zip(*good, strict=True) if good else [()] * len(names)
    series = [pl.Series(name, column, dtype=pl.String) for name, column in zip(names, columns, strict=True)]
    return pl.DataFrame([*series, pl.Series(ROW, numbers, dtype=pl.Int64)]), rejects, row - first_row + 1


def _records(feed: _Feed, options: models.Csv, width: int) -> Iterator[tuple[list[str], str | None, str]]:
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
        elif error and (len(feed.taken) > 1 or "end of data" in error):
            feed.resync()
            yield fields, "unbalanced quote", feed.taken[0]
        else:
            reason = f"malformed record ({error})" if error else f"expected {width} fields, found {len(fields)}"
            yield fields, reason, raw


# ── batches ──────────────────────────────────────────────────────────────────────────
def _batches(text: Path, layout: _Layout, options: models.Csv, label: str, batch_rows: int) -> Iterator[CsvData]:
    """Given the UTF-8 file, yield its rows in batches of about batch_rows (at least one batch)."""
    first_row = 1
    for chunk in _chunks(text, layout.offset, options.quote, batch_rows):
        data = _span(chunk, layout, options, label, first_row)
        first_row += data.rows_read
        yield data
    if first_row == 1:  # no records: one empty batch still carries the columns
        yield _span(b"", layout, options, label, first_row)


def _chunks(text: Path, offset: int, quote: str, batch_rows: int) -> Iterator[bytes]:
    """Given the UTF-8 file and where its data starts, yield runs of whole records, about
    batch_rows each, each cut at a newline after an even number of quotes."""
    needle = quote.encode()
    with text.open("rb") as file:
        file.seek(offset)
        sample = file.read(_BLOCK)
        base = size = max(1, batch_rows * len(sample) // max(sample.count(b"\n"), 1))
        while True:
            file.seek(offset)
            block = file.read(size)
            if len(block) < size:  # the rest of the file
                if block:
                    yield block
                return
            cut = _cut(block, needle, force=size >= 8 * max(base, _BLOCK))
            if cut:
                yield block[:cut]
            offset, size = offset + cut, base if cut else 2 * size


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
