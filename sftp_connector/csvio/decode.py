"""Decoding a local file for the record readers: decompress (capped at max_file_bytes) →
transcode to UTF-8 if needed → find the header and where the data records start.

`prepare` returns the file as plain UTF-8 (itself or a temp) and `layout` its column names and
data offset as a `Layout`. Split from the readers (`records`) because these steps work on
the whole file as bytes, once, before any record is parsed; `Feed`, the line source for
`csv.reader`, serves both the header here and the slow record path there.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import errno
import gzip
import os
import re
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, overload

from sftp_connector import errors
from sftp_connector.config import models
from sftp_connector.private import private_dir

ROW = "_row"
BLOCK = 1 << 20  # bytes per read when copying, transcoding or scanning
_MAGIC = {"gzip": rb"\x1f\x8b", "bz2": rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", "zip": rb"PK\x03\x04"}
_CORRUPT = (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError)
UTF8_HINT = "not valid utf-8; set csv.encoding, e.g. cp1252"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

Source = Path | Callable[[], IO[bytes]]
"""A local file, or how to open one still being written (a decryption under way: a read waits for its bytes)."""


def open_source(source: Source) -> IO[bytes]:
    """Given a Source, return it opened for reading bytes."""
    return source.open("rb") if isinstance(source, Path) else source()


@dataclass(frozen=True, slots=True)
class Layout:
    """Column names, and where the data records start: after `lines` lines, or `offset` bytes."""

    names: tuple[str, ...]
    lines: int
    offset: int


class Feed:
    """Lines decoded for csv.reader; `taken` holds those of the current record, `resync` pushes
    all of them but the first back, to be read again."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._pushed: list[str] = []
        self.taken: list[str] = []

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> str:
        line = self._pushed.pop() if self._pushed else next(self._lines).decode("utf-8")
        self.taken.append(line)
        return line

    def resync(self) -> None:
        self._pushed.extend(reversed(self.taken[1:]))


# ── decompress and transcode ─────────────────────────────────────────────────────────
@overload
def prepare(path: Path, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path,
            temps: contextlib.ExitStack) -> Path: ...
@overload
def prepare(path: Source, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path,
            temps: contextlib.ExitStack) -> Source: ...
def prepare(
    path: Source, options: models.Csv, *, label: str, max_bytes: int, work_dir: Path, temps: contextlib.ExitStack
) -> Source:
    """Given the local file, return it as plain UTF-8: itself or a temp. Raise errors.InputError if
    it is too big, corrupt, or not in the declared encoding. (A file still being written is
    held to max_bytes by its writer.)"""
    kind: str = options.compression
    if kind == "auto":
        with open_source(path) as file:
            head = file.read(10)
        kind = next((found for found, magic in _MAGIC.items() if re.match(magic, head)), "none")
    if kind == "none" and isinstance(path, Path) and path.stat().st_size > max_bytes:
        raise errors.InputError(f"file size exceeds max_file_bytes ({max_bytes} bytes)", file=label)
    if kind != "none":
        plain = _temp(work_dir, temps)
        _decompress(path, plain, kind, label=label, max_bytes=max_bytes)
        path = plain
    if codecs.lookup(options.encoding).name not in ("utf-8", "utf-8-sig"):
        utf8 = _temp(work_dir, temps)
        _transcode(path, utf8, options, label)
        if isinstance(path, Path) and kind != "none":
            path.unlink()  # free the disk early: the decompressed copy is no longer needed
        path = utf8
    return path


def _temp(work_dir: Path, temps: contextlib.ExitStack) -> Path:
    """Given the work directory, return a new empty temp file there that `temps` removes."""
    private_dir(work_dir)
    fd, name = tempfile.mkstemp(dir=work_dir, prefix=".csvio-", suffix=".tmp")
    os.close(fd)
    temps.callback(Path(name).unlink, missing_ok=True)
    return Path(name)


@contextlib.contextmanager
def _opened(source: Source, kind: str, label: str) -> Iterator[IO[bytes]]:
    """Given a compressed file, yield its content. Raise errors.InputError if a zip holds not one file."""
    with open_source(source) as raw:
        if kind != "zip":
            stream: IO[bytes]
            with gzip.open(raw, "rb") if kind == "gzip" else bz2.open(raw, "rb") as stream:  # type: ignore[assignment]
                yield stream
            return
        with _unzipped(raw, label) as stream:
            yield stream


@contextlib.contextmanager
def _unzipped(raw: IO[bytes], label: str) -> Iterator[IO[bytes]]:
    """Given a zip archive, yield its one file's content. Raise errors.InputError if it holds not one file."""
    with zipfile.ZipFile(raw) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            raise errors.InputError(f"zip archive must hold exactly one file, found {len(members)}", file=label)
        with archive.open(members[0]) as stream:
            yield stream


def _decompress(src: Source, dst: Path, kind: str, *, label: str, max_bytes: int) -> None:
    """Given a compressed file, write its content to dst, stopping as soon as it passes max_bytes.
    Raise errors.InputError if it is corrupt or too big."""
    total = 0
    try:
        with _opened(src, kind, label) as stream, dst.open("wb") as out:
            while block := stream.read(BLOCK):
                total += len(block)
                if total > max_bytes:
                    raise errors.InputError(f"decompressed size exceeds max_file_bytes ({max_bytes} bytes)", file=label)
                out.write(block)
    except _CORRUPT as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise _disk_full(dst, exc, label) from exc
        raise errors.InputError(f"cannot decompress ({kind}): {exc}", file=label) from exc


def _transcode(src: Source, dst: Path, options: models.Csv, label: str) -> None:
    """Given a file in csv.encoding, write it to dst as UTF-8, streamed. Raise errors.InputError
    naming the record (else the byte offset) of the first invalid bytes."""
    decoder = codecs.getincrementaldecoder(options.encoding)("strict")
    offset = 0
    try:
        with open_source(src) as source, dst.open("w", encoding="utf-8", newline="") as out:
            while True:
                block = source.read(BLOCK)
                try:
                    out.write(decoder.decode(block, final=not block))
                except UnicodeDecodeError as exc:
                    out.write(exc.object[: exc.start].decode(options.encoding, "replace"))
                    bad = exc
                    break
                if not block:
                    return
                offset += len(block)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise _disk_full(dst, exc, label) from exc
        raise
    where = _record_at_end(dst, options) or f"byte {offset + bad.start}"
    found = bad.object[bad.start : bad.end].hex()
    message = f"{where}: not valid {options.encoding} (byte 0x{found}); check csv.encoding"
    raise errors.InputError(message, file=label) from bad


def _disk_full(dst: Path, exc: OSError, label: str) -> errors.GoalError:
    """Given a write that found the disk full, return the GoalError naming the folder and the cause."""
    return errors.GoalError(f"cannot write a temporary copy in {dst.parent}: {os.strerror(exc.errno or 0).lower()}",
                            file=label)


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
def layout(text: Source, options: models.Csv, label: str) -> Layout:
    """Given the UTF-8 file, return its column names and where its data records start. Raise
    errors.InputError if the header row is missing or unreadable, or a name is empty or doubled."""
    with open_source(text) as file:
        head = file.read(4)
        _refuse_utf16(head, label)
        start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        file.seek(start)
        skipped = _excel_sep_line(file.readline(16), options, label)  # Excel's `sep=;`: not a record
        start += skipped
        if not options.header:
            return Layout(_checked(options.columns or [], "csv.columns", label), int(skipped > 0), start)
        file.seek(start)
        feed = Feed(_bounded_lines(file, label))
        reader = csv.reader(feed, delimiter=options.delimiter, quotechar=options.quote, strict=True)
        try:
            names = next((record for record in reader if record), None)
        except UnicodeDecodeError as exc:
            raise errors.InputError(f"header row: {UTF8_HINT}", file=label) from exc
        except csv.Error as exc:
            raise errors.InputError(f"header row cannot be read: {exc}", file=label) from exc
    if names is None:
        raise errors.InputError("empty file: no header row", file=label)
    size = sum(len(line.encode()) for line in feed.taken)  # the header and any blank lines before it
    return Layout(_checked(names, "header", label), len(feed.taken) + int(skipped > 0), start + size)


MAX_HEADER = 4 << 20
"""Bytes a header line may have: thousands of column names fit; a longer one is not read into memory."""


def _bounded_lines(file: IO[bytes], label: str) -> Iterator[bytes]:
    """Given a file, yield its lines; raise errors.InputError at a line longer than MAX_HEADER, unread."""
    while line := file.readline(MAX_HEADER + 1):
        if len(line) > MAX_HEADER:
            raise errors.InputError(f"header row is longer than {MAX_HEADER >> 20} MiB: not a CSV header", file=label)
        yield line


def _refuse_utf16(head: bytes, label: str) -> None:
    """Given the first bytes of a file read as UTF-8, raise errors.InputError if a UTF-16 or UTF-32 byte
    order mark says what it really is (Excel's "Unicode text" is UTF-16)."""
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if head.startswith(bom):
            raise errors.InputError(f"the file starts with a {name} byte order mark: it is {name} text, not utf-8; "
                                    f"set csv.encoding: {name.lower()}", file=label)


_EXCEL_SEP = re.compile(rb"sep=(.)\r?\n?")


def _excel_sep_line(line: bytes, options: models.Csv, label: str) -> int:
    """Given the file's first line, return its length if it is Excel's `sep=X` line naming csv.delimiter, else
    0. Raise errors.InputError if it names another delimiter: the rows would not split as configured."""
    found = _EXCEL_SEP.fullmatch(line)
    if found is None:
        return 0
    named = found.group(1).decode("utf-8", "replace")
    if named != options.delimiter:
        raise errors.InputError(f"its first line `sep={named}` is Excel's note of the delimiter `{named}`, but "
                                f"csv.delimiter is `{options.delimiter}`: set csv.delimiter: \"{named}\"", file=label)
    return len(line)


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
