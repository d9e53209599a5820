"""csvio, scenario by scenario: small files written to tmp_path, read back as the import stage reads them."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import zipfile
from pathlib import Path
from unittest import mock

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sftp_connector import csvio, errors
from sftp_connector.config import models

LABEL = "customers_1.csv"


def read(tmp_path: Path, data: bytes, *, max_bytes: int = 10**9, **options: object) -> csvio.CsvData:
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    return csvio.read(path, models.Csv(**options), label=LABEL, max_bytes=max_bytes, work_dir=tmp_path / "work")


def batches(tmp_path: Path, data: bytes, batch_rows: int, **options: object) -> list[csvio.CsvData]:
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    csv_options = models.Csv(**options)
    work = tmp_path / "work"
    return list(csvio.batches(path, csv_options, label=LABEL, max_bytes=10**9, work_dir=work, batch_rows=batch_rows))


def rows(data: csvio.CsvData) -> list[tuple]:
    return data.frame.rows()


def refused(tmp_path: Path, data: bytes, **options: object) -> str:
    with pytest.raises(errors.InputError) as caught:
        read(tmp_path, data, **options)
    assert caught.value.file == LABEL
    return caught.value.cause


def no_temps_left(tmp_path: Path) -> bool:
    return not any((tmp_path / "work").iterdir()) if (tmp_path / "work").exists() else True


# ── the shape of the result ──────────────────────────────────────────────────────────


@pytest.mark.parametrize("delimiter", [",", "\t", ";", "|"])
def test_delimiters(tmp_path: Path, delimiter: str) -> None:
    data = read(tmp_path, f"id{delimiter}name\n1{delimiter}Anna\n2{delimiter}Bram\n".encode(), delimiter=delimiter)
    assert data.columns == ("id", "name")
    assert data.frame.schema == pl.Schema({"id": pl.String, "name": pl.String, "_row": pl.Int64})
    assert rows(data) == [("1", "Anna", 1), ("2", "Bram", 2)]
    assert data.rejects == () and data.rows_read == 2


def test_no_schema_inference_keeps_leading_zeros_and_numbers_as_text(tmp_path: Path) -> None:
    data = read(tmp_path, b"zip,points,when\n0123,10,2024-01-02\n0456,1.5e3,x\n")
    assert rows(data) == [("0123", "10", "2024-01-02", 1), ("0456", "1.5e3", "x", 2)]


def test_quotes_escaped_quotes_and_a_custom_quote_char(tmp_path: Path) -> None:
    data = read(tmp_path, b'id,text\n1,"say ""hi"", ok"\n2,plain\n')
    assert rows(data) == [("1", 'say "hi", ok', 1), ("2", "plain", 2)]
    data = read(tmp_path, b"id;text\n1;'a;b ''c'''\n", delimiter=";", quote="'")
    assert rows(data) == [("1", "a;b 'c'", 1)]


def test_quoted_newlines_keep_record_numbers_not_line_numbers(tmp_path: Path) -> None:
    data = read(tmp_path, b'id,address\n1,"Main St 1\nAmsterdam"\n2,x\n3,"a\r\nb\n\nc"\n4,y\n')
    assert rows(data) == [("1", "Main St 1\nAmsterdam", 1), ("2", "x", 2), ("3", "a\r\nb\n\nc", 3), ("4", "y", 4)]


def test_crlf_line_endings(tmp_path: Path) -> None:
    data = read(tmp_path, b"id,name\r\n1,Anna\r\n2,\r\n")
    assert rows(data) == [("1", "Anna", 1), ("2", None, 2)]


def test_bom_is_removed_and_header_names_trimmed(tmp_path: Path) -> None:
    data = read(tmp_path, b"\xef\xbb\xbf id , name\n1,x\n")
    assert data.columns == ("id", "name")
    data = read(tmp_path, b"\xef\xbb\xbf1,x\n", header=False, columns=["id", "name"])
    assert rows(data) == [("1", "x", 1)]


def test_whitespace_in_cells_is_kept(tmp_path: Path) -> None:
    assert rows(read(tmp_path, b"a,b\n x , \n")) == [(" x ", " ", 1)]


def test_header_false_takes_names_from_columns(tmp_path: Path) -> None:
    data = read(tmp_path, b"1,Anna\n2,Bram\n", header=False, columns=["id", "name"])
    assert data.columns == ("id", "name")
    assert rows(data) == [("1", "Anna", 1), ("2", "Bram", 2)]
    assert read(tmp_path, b"", header=False, columns=["id", "name"]).frame.height == 0


def test_plain_file_whose_header_starts_like_bz2_is_not_decompressed(tmp_path: Path) -> None:
    assert read(tmp_path, b"BZh9,PK\n1,2\n").columns == ("BZh9", "PK")


def test_null_values(tmp_path: Path) -> None:
    data = read(tmp_path, b'a,b,c\n,NULL,n/a\n"",null,x\n', null_values=["", "NULL", "n/a"])
    assert rows(data) == [(None, None, None, 1), (None, "null", "x", 2)]
    assert rows(read(tmp_path, b"a,b\n,x\n", null_values=[])) == [("", "x", 1)]


def test_multi_values_are_not_split(tmp_path: Path) -> None:
    assert rows(read(tmp_path, b"id,interests\n1,a|b|c\n")) == [("1", "a|b|c", 1)]


def test_column_names_are_not_patterns(tmp_path: Path) -> None:
    data = read(tmp_path, b"*,^id$,a.b\n,x,\n")
    assert data.columns == ("*", "^id$", "a.b") and rows(data) == [(None, "x", None, 1)]


def test_data_that_starts_like_zlib_is_read_as_text(tmp_path: Path) -> None:
    data = b"x^2,a\nx^3,b\n"  # polars would take "x^" for a zlib header
    assert rows(read(tmp_path, data, header=False, columns=["f", "g"])) == [("x^2", "a", 1), ("x^3", "b", 2)]
    parts = batches(tmp_path, b"f,g\n" + data, batch_rows=1)
    assert [row for part in parts for row in rows(part)] == [("x^2", "a", 1), ("x^3", "b", 2)]


# ── the header ───────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("data", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_empty_file_is_refused(tmp_path: Path, data: bytes) -> None:
    assert refused(tmp_path, data) == "empty file: no header row"


def test_header_only_is_zero_rows(tmp_path: Path) -> None:
    for data in (b"id,name\n", b"id,name"):
        result = read(tmp_path, data)
        assert result.columns == ("id", "name") and result.frame.height == 0 and result.rows_read == 0
        assert result.frame.columns == ["id", "name", "_row"]


def test_duplicate_and_empty_header_names_are_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, b"id,email,id ,name,email\n1,2,3,4,5\n") == "header: duplicate column names: id, email"
    assert refused(tmp_path, b"id,,name, \n1,2,3,4\n") == "header: empty column name (column 2, 4)"
    assert "reserved" in refused(tmp_path, b"id,_row\n1,2\n")


# ── encodings ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("encoding", "text"), [("latin-1", "Hélène"), ("cp1252", "€ 5 Šœ"), ("utf-16", "Zoë €")])
def test_other_encodings_are_transcoded(tmp_path: Path, encoding: str, text: str) -> None:
    data = read(tmp_path, f"id,name\n1,{text}\n2,x\n".encode(encoding), encoding=encoding)
    assert rows(data) == [("1", text, 1), ("2", "x", 2)]
    assert no_temps_left(tmp_path)


def test_invalid_utf8_names_the_record(tmp_path: Path) -> None:
    data = b'id,name\n1,"two\nlines"\n2,ok\n3,H\xe9l\xe8ne\n4,ok\n'
    assert refused(tmp_path, data) == "row 3: not valid utf-8; set csv.encoding, e.g. cp1252"
    assert refused(tmp_path, b"id,n\xe9\n1,2\n") == "header row: not valid utf-8; set csv.encoding, e.g. cp1252"


def test_invalid_cp1252_names_the_record(tmp_path: Path) -> None:
    data = b"id,name\n1,\x80\n2,\x81\n"  # 0x81 is undefined in cp1252
    assert refused(tmp_path, data, encoding="cp1252") == "row 2: not valid cp1252 (byte 0x81); check csv.encoding"
    assert no_temps_left(tmp_path)


# ── compression ──────────────────────────────────────────────────────────────────────

PLAIN = b"id,name\n1,Anna\n2,Bram\n"


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["gzip", "bz2", "zip"])
@pytest.mark.parametrize("compression", ["auto", "forced"])
def test_compressed_files(tmp_path: Path, kind: str, compression: str) -> None:
    packed = {"gzip": gzip.compress, "bz2": bz2.compress, "zip": lambda data: zipped(("x.csv", data))}[kind](PLAIN)
    data = read(tmp_path, packed, compression=kind if compression == "forced" else "auto")
    assert rows(data) == [("1", "Anna", 1), ("2", "Bram", 2)]
    assert no_temps_left(tmp_path)


def test_compressed_and_transcoded(tmp_path: Path) -> None:
    data = read(tmp_path, gzip.compress("id,name\n1,Zoë\n".encode("cp1252")), encoding="cp1252")
    assert rows(data) == [("1", "Zoë", 1)]
    assert no_temps_left(tmp_path)


def test_zip_must_hold_one_file(tmp_path: Path) -> None:
    cause = refused(tmp_path, zipped(("a.csv", PLAIN), ("b.csv", PLAIN)))
    assert cause == "zip archive must hold exactly one file, found 2"


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, gzip.compress(PLAIN)[:-12]).startswith("cannot decompress (gzip)")
    assert no_temps_left(tmp_path)


def test_gzip_bomb_is_capped(tmp_path: Path) -> None:
    bomb = gzip.compress(b"id\n" + b"0" * 64 * 2**20, compresslevel=1)  # 64 MiB from ~64 KiB
    assert refused(tmp_path, bomb, max_bytes=2**20) == "decompressed size exceeds max_file_bytes (1048576 bytes)"
    assert no_temps_left(tmp_path)


def test_plain_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, PLAIN, max_bytes=10) == "file size exceeds max_file_bytes (10 bytes)"


# ── bad records ──────────────────────────────────────────────────────────────────────


def test_ragged_rows_are_rejected_and_neighbours_kept(tmp_path: Path) -> None:
    data = read(tmp_path, b'a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,"x\ny",12\n13,,\n14\n15,16,17\n')
    assert rows(data) == [("1", "2", "3", 1), ("10", "x\ny", "12", 4), ("13", None, None, 5), ("15", "16", "17", 7)]
    assert data.rejects == (
        errors.RowReject(LABEL, 2, None, "expected 3 fields, found 2", "4,5"),
        errors.RowReject(LABEL, 3, None, "expected 3 fields, found 4", "6,7,8,9"),
        errors.RowReject(LABEL, 6, None, "expected 3 fields, found 1", "14"),
    )
    assert data.rows_read == 7


def test_short_row_hidden_among_empty_last_cells_is_found(tmp_path: Path) -> None:
    data = read(tmp_path, b'a,b,c\n1,"x,y",\n2,3\n4,5,\n')  # one delimiter too few, one too many inside quotes
    assert rows(data) == [("1", "x,y", None, 1), ("4", "5", None, 3)]
    assert [(r.row, r.reason) for r in data.rejects] == [(2, "expected 3 fields, found 2")]


def test_short_row_in_a_file_with_quoted_newlines_is_found(tmp_path: Path) -> None:
    data = read(tmp_path, b'a,b,c\n1,"x\ny",\n4,5\n6,"7,8",\n')
    assert rows(data) == [("1", "x\ny", None, 1), ("6", "7,8", None, 3)]
    assert [(r.row, r.reason) for r in data.rejects] == [(2, "expected 3 fields, found 2")]


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    data = read(tmp_path, b"a,b\n1,2\n\n3,4\r\n\r\n")
    assert rows(data) == [("1", "2", 1), ("3", "4", 2)] and data.rejects == ()


def test_unbalanced_quote_rejects_only_its_record(tmp_path: Path) -> None:
    data = read(tmp_path, b'a,b,c\n1,2,3\n4,"5,6\n7,8,9\n10,"quoted",12\n')
    assert rows(data) == [("1", "2", "3", 1), ("7", "8", "9", 3), ("10", "quoted", "12", 4)]
    assert data.rejects == (errors.RowReject(LABEL, 2, None, "unbalanced quote", '4,"5,6'),)


def test_unbalanced_quote_on_the_last_line(tmp_path: Path) -> None:
    data = read(tmp_path, b'a,b\n1,2\n3,"4')
    assert rows(data) == [("1", "2", 1)]
    assert [(r.row, r.reason) for r in data.rejects] == [(2, "unbalanced quote")]


def test_text_after_a_closing_quote_is_rejected(tmp_path: Path) -> None:
    data = read(tmp_path, b'a,b\n1,"2"x\n3,4\n')
    assert rows(data) == [("3", "4", 2)]
    assert data.rejects[0].row == 1 and data.rejects[0].reason.startswith("malformed record")


def test_nul_byte_rejects_the_row(tmp_path: Path) -> None:
    data = read(tmp_path, b"a,b\n1,x\x00y\n2,z\n")
    assert rows(data) == [("2", "z", 2)]
    assert data.rejects == (errors.RowReject(LABEL, 1, None, "NUL byte", "1,x\x00y"),)
    data = read(tmp_path, b"a,b\n1,x\x00y\n2\n3,z\n")  # and on the slow path
    assert rows(data) == [("3", "z", 3)]
    assert [(r.row, r.reason) for r in data.rejects] == [(1, "NUL byte"), (2, "expected 2 fields, found 1")]


def test_reject_value_is_truncated(tmp_path: Path) -> None:
    data = read(tmp_path, b"a,b\n" + b"x," * 300 + b"\n")
    assert len(data.rejects[0].value or "") == 200


# ── batches ──────────────────────────────────────────────────────────────────────────


def sample_file(records: int) -> bytes:
    lines = ["id,name,note"]
    for n in range(1, records + 1):
        if n % 97 == 0:
            lines.append(f"{n},short")
        elif n % 31 == 0:
            lines.append(f'{n},"multi\nline, {n}",""""')
        else:
            lines.append(f"{n},name {n},")
    return ("\n".join(lines) + "\n").encode()


def test_batches_give_the_rows_of_read_with_continuous_numbers(tmp_path: Path) -> None:
    whole = read(tmp_path, sample_file(2000))
    parts = batches(tmp_path, sample_file(2000), batch_rows=150)
    assert len(parts) > 5
    assert pl.concat([part.frame for part in parts]).equals(whole.frame)
    assert sum((part.rejects for part in parts), ()) == whole.rejects
    assert sum(part.rows_read for part in parts) == whole.rows_read == 2000
    assert all(part.columns == ("id", "name", "note") for part in parts)
    seen = 0
    for part in parts:  # each batch numbers on where the previous one stopped
        numbers = sorted([*part.frame["_row"].to_list(), *(r.row for r in part.rejects)])
        assert numbers == list(range(seen + 1, seen + part.rows_read + 1))
        seen += part.rows_read


def test_the_first_batches_are_an_eighth_a_quarter_and_a_half(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = [part.rows_read for part in batches(tmp_path, sample_file(4000), batch_rows=400)]
    assert all(350 <= h <= 450 for h in small[:-1])  # a few kilobytes a batch: no smaller ones first
    monkeypatch.setattr(csvio.records, "_RAMP_FROM", 1000)  # as a run of a megabyte would
    heights = [part.rows_read for part in batches(tmp_path, sample_file(4000), batch_rows=400)]
    assert sum(heights) == 4000
    assert [round(h / 50) for h in heights[:3]] == [1, 2, 4]  # about 50, 100 and 200 rows
    assert all(350 <= h <= 450 for h in heights[3:-1])


def test_big_runs_are_halved_around_bad_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = read(tmp_path, sample_file(2000))
    monkeypatch.setattr(csvio.records, "_SLOW_BYTES", 200)  # so that these small runs are halved too
    halved = read(tmp_path, sample_file(2000))
    assert halved.frame.equals(expected.frame) and halved.rejects == expected.rejects
    assert halved.rows_read == expected.rows_read


def test_batches_of_an_empty_table_and_a_gzip_file(tmp_path: Path) -> None:
    (only,) = batches(tmp_path, b"id,name\n", batch_rows=10)
    assert only.frame.height == 0 and only.columns == ("id", "name")
    parts = batches(tmp_path, gzip.compress(sample_file(300)), batch_rows=50)
    assert pl.concat([part.frame for part in parts]).equals(read(tmp_path, sample_file(300)).frame)
    assert no_temps_left(tmp_path)


# ── write ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("delimiter", "header"), [(",", True), (";", True), ("\t", False)])
def test_write_round_trip(tmp_path: Path, delimiter: str, header: bool) -> None:
    frame = pl.DataFrame({"id": ["1", "2", "3", "4"], "text": ['a "quoted", b', "two\nlines", None, "cr\ronly"]})
    target = tmp_path / "out" / "export.csv"
    target.parent.mkdir()
    target.write_text("old content")
    csvio.write(frame, target, delimiter=delimiter, header=header)
    assert [p.name for p in target.parent.iterdir()] == ["export.csv"]
    options = {"delimiter": delimiter, "header": header} | ({} if header else {"columns": ["id", "text"]})
    back = read(tmp_path, target.read_bytes(), **options)
    assert back.frame.drop("_row").equals(frame)


def test_write_failure_leaves_the_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "export.csv"
    target.write_text("old")
    with pytest.raises(Exception):  # noqa: B017 - whatever polars raises for a bad delimiter
        csvio.write(pl.DataFrame({"a": ["1"]}), target, delimiter="ab")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["export.csv"]


# ── property: whatever Python's csv module writes reads back as it was ───────────────

CELL = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
NAME = st.text(
    st.characters(exclude_categories=("Cs", "Zs", "Cc"), exclude_characters="\ufeff"), min_size=1, max_size=6
)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    names = draw(st.lists(NAME.map(str.strip).filter(lambda n: n and n != "_row"), min_size=1, max_size=5, unique=True))
    return names, draw(st.lists(st.lists(CELL, min_size=len(names), max_size=len(names)), max_size=15))


def written(names: list[str], table: list[list[str]], delimiter: str, newline: str, ragged_at: int | None) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    writer.writerow(names)
    for number, row in enumerate(table, 1):
        writer.writerow(row)
        if number == ragged_at:
            writer.writerow(["ragged"] * (len(names) + 1))
    return out.getvalue().encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    table=tables(),
    delimiter=st.sampled_from([",", ";", "\t"]),
    newline=st.sampled_from(["\n", "\r\n"]),
    ragged=st.booleans(),
    batch_rows=st.integers(1, 8),
)
def test_any_table_reads_back_as_written(
    tmp_path: Path,
    table: tuple[list[str], list[list[str]]],
    delimiter: str,
    newline: str,
    ragged: bool,
    batch_rows: int,
) -> None:
    names, cells = table
    # Python's writer quotes only the characters of its lineterminator, so with "\n" a bare "\r"
    # goes out unquoted and no reader (Python's own included) can tell it from a line end.
    assume(newline == "\r\n" or not any("\r" in value for row in [names, *cells] for value in row))
    ragged_at = (len(cells) + 1) // 2 if ragged and cells else None  # a ragged record forces the slow path
    data = written(names, cells, delimiter, newline, ragged_at)
    result = read(tmp_path, data, delimiter=delimiter)
    expected = [[value or None for value in row] for row in cells]  # "" is a null value by default
    assert result.columns == tuple(names)
    assert [list(row) for row in result.frame.drop("_row").rows()] == expected
    assert result.rows_read == len(cells) + (ragged_at is not None)
    assert [reject.row for reject in result.rejects] == ([] if ragged_at is None else [ragged_at + 1])
    with mock.patch.object(csvio.records, "_SLOW_BYTES", 16):  # batches whose runs are halved down to a few records
        parts = batches(tmp_path, data, batch_rows, delimiter=delimiter)
    assert pl.concat([part.frame for part in parts]).equals(result.frame)
    assert sum((part.rejects for part in parts), ()) == result.rejects


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables(), delimiter=st.sampled_from([",", ";", "\t"]))
def test_any_frame_written_reads_back(tmp_path: Path, table: tuple[list[str], list[list[str]]], delimiter: str) -> None:
    names, cells = table
    frame = pl.DataFrame(
        [[v or None for v in row] for row in cells], schema=dict.fromkeys(names, pl.String), orient="row"
    )
    target = tmp_path / "export.csv"
    csvio.write(frame, target, delimiter=delimiter)
    assert read(tmp_path, target.read_bytes(), delimiter=delimiter).frame.drop("_row").equals(frame)
