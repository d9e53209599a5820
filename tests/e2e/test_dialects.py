"""CSV dialects partners send (`csv:` options), end to end: encrypted by gpg, fetched over sshd, on both stores."""

from __future__ import annotations

import bz2
import csv
import gzip
import time
from collections.abc import Callable
from typing import Any

import pytest

from sftp_connector.results import FileResult, RunResult
from tests.fixtures.connector import Deployment

OLD = time.time() - 3600
NAME = "customers_1.csv.gpg"


def goal(
    csv_options: dict[str, Any] | None = None,
    mappings: list[dict[str, str]] | None = None,
    pattern: str = "customers_*.gpg",
    **extra: Any,
) -> dict[str, Any]:
    """Given `csv:` options and mappings, return an import-profiles goal keyed on `email`."""
    return {
        "kind": "import-profiles",
        "name": "customers",
        "files": [{"name": "customers", "directory": "in", "pattern": pattern}],
        "stable_after_s": 0,
        "csv": csv_options or {},
        "identifiers": [{"field": "email", "property": "email"}],
        "mappings": mappings or [{"field": "name", "property": "name", "rule": "set"}],
        **extra,
    }


def mapped(*fields: str) -> list[dict[str, str]]:
    """Given field names, return `set` mappings into properties of the same name."""
    return [{"field": name, "property": name, "rule": "set"} for name in fields]


def imported(result: RunResult) -> FileResult:
    """Given a run of one goal and one file, return that file's result, asserting it imported."""
    file = result.goals[0].files[0]
    assert (result.status, file.status) == ("success", "imported"), file.error or result.goals[0].error
    return file


def test_tsv_keeps_commas_and_quotes_inside_cells(deployment: Deployment) -> None:
    deployment.write_goal("customers", goal({"delimiter": "\t"}, mapped("company", "note")))
    data = 'email\tcompany\tnote\na@x.com\tSmith, Jones & Co\tsays "hi"\nb@x.com\tAcme\t12" pizza, large\n'
    deployment.put_encrypted(f"in/{NAME}", data, mtime=OLD)
    assert imported(deployment.run()).counts.rows_applied == 2
    assert deployment.properties() == [
        {"email": ["a@x.com"], "company": ["Smith, Jones & Co"], "note": ['says "hi"']},
        {"email": ["b@x.com"], "company": ["Acme"], "note": ['12" pizza, large']},
    ]


def test_semicolons_with_decimal_commas_and_quoted_semicolons_and_newlines(deployment: Deployment) -> None:
    deployment.write_goal("customers", goal({"delimiter": ";"}, mapped("name", "price", "note")))
    data = (
        "email;name;price;note\r\n"
        'a@x.com;"Müller; Anna";3,50;"line one\r\nline two; still two"\r\n'
        'b@x.com;Bob;"12,75";plain\r\n'
    )
    deployment.put_encrypted(f"in/{NAME}", data, mtime=OLD)
    assert imported(deployment.run()).counts.rows_read == 2
    assert deployment.properties() == [
        {"email": ["a@x.com"], "name": ["Müller; Anna"], "price": ["3,50"],
         "note": ["line one\r\nline two; still two"]},
        {"email": ["b@x.com"], "name": ["Bob"], "price": ["12,75"], "note": ["plain"]},
    ]


@pytest.mark.parametrize(
    ("suffix", "compress", "compression"),
    [("gz", gzip.compress, "auto"), ("gz", gzip.compress, "gzip"), ("bz2", bz2.compress, "auto"),
     ("bz2", bz2.compress, "bz2")],
)
def test_compressed_file_inside_pgp(
    deployment: Deployment, suffix: str, compress: Callable[[bytes], bytes], compression: str
) -> None:
    deployment.write_goal("customers", goal({"compression": compression}, pattern=f"customers_*.csv.{suffix}.gpg"))
    plain = b"email,name\na@x.com,Ada\nb@x.com,Bob\n"
    deployment.put_encrypted(f"in/customers_1.csv.{suffix}.gpg", compress(plain), mtime=OLD, compress=False)
    assert imported(deployment.run()).counts.rows_applied == 2
    assert deployment.properties() == [{"email": ["a@x.com"], "name": ["Ada"]}, {"email": ["b@x.com"], "name": ["Bob"]}]


def test_headerless_file_is_named_by_columns(deployment: Deployment) -> None:
    deployment.write_goal("customers", goal({"header": False, "columns": ["email", "name", "city"]},
                                            mapped("name", "city")))
    deployment.put_encrypted(f"in/{NAME}", "a@x.com,Ada,Paris\nb@x.com,Bob,\n", mtime=OLD)
    assert imported(deployment.run()).counts.rows_read == 2  # the first line is data, not a header
    assert deployment.properties() == [
        {"email": ["a@x.com"], "name": ["Ada"], "city": ["Paris"]},
        {"email": ["b@x.com"], "name": ["Bob"]},
    ]


def test_headerless_rows_with_the_wrong_field_count_are_rejected(deployment: Deployment) -> None:
    options = {"header": False, "columns": ["email", "name", "city"]}
    deployment.write_goal("customers", goal(options, mapped("name", "city"), max_reject_ratio=0.6))
    data = (
        "a@x.com,Ada,Paris\nb@x.com,Bob\nc@x.com,Cy,Rome,extra\nd@x.com,Di,\n"
        'e@x.com,"Eve\nSmith",Oslo,\nf@x.com,"Fay\nJones",Lima\n'  # a quoted line break is not a new row
    )
    deployment.put_encrypted(f"in/{NAME}", data, mtime=OLD)
    result = deployment.run()
    counts = imported(result).counts
    assert (counts.rows_read, counts.rows_applied, counts.rows_rejected) == (6, 3, 3)
    assert deployment.properties() == [
        {"email": ["a@x.com"], "name": ["Ada"], "city": ["Paris"]},
        {"email": ["d@x.com"], "name": ["Di"]},
        {"email": ["f@x.com"], "name": ["Fay\nJones"], "city": ["Lima"]},
    ]
    rejects = deployment.dir / "state" / "rejects" / result.run / "customers_1.csv"
    with rejects.open(newline="", encoding="utf-8") as handle:
        rows = [(r["_row"], r["_reason"], r["_record"]) for r in csv.DictReader(handle)]
    assert rows == [
        ("2", "expected 3 fields, found 2", "b@x.com,Bob"),
        ("3", "expected 3 fields, found 4", "c@x.com,Cy,Rome,extra"),
        ("5", "expected 3 fields, found 4", 'e@x.com,"Eve\nSmith",Oslo,'),
    ]


@pytest.mark.parametrize(
    ("encoding", "name"), [("latin-1", "José Straße"), ("cp1252", "José Straße €5")]
)
def test_single_byte_encodings(deployment: Deployment, encoding: str, name: str) -> None:
    deployment.write_goal("customers", goal({"encoding": encoding, "delimiter": ";"}))
    deployment.put_encrypted(f"in/{NAME}", f"email;name\r\na@x.com;{name}\r\n".encode(encoding), mtime=OLD)
    imported(deployment.run())
    assert deployment.properties() == [{"email": ["a@x.com"], "name": [name]}]


@pytest.mark.parametrize("header", [True, False])
def test_utf8_bom_before_the_identifier_column(deployment: Deployment, header: bool) -> None:
    options = {} if header else {"header": False, "columns": ["email", "name"]}
    deployment.write_goal("customers", goal(options))
    data = ("email,name\n" if header else "") + "a@x.com,Zoë\n"
    deployment.put_encrypted(f"in/{NAME}", "\ufeff" + data, mtime=OLD)
    imported(deployment.run())
    assert deployment.properties() == [{"email": ["a@x.com"], "name": ["Zoë"]}]


def test_null_values_clear_a_set_or_clear_property(deployment: Deployment) -> None:
    mappings = [{"field": "name", "property": "name", "rule": "set"},
                {"field": "fax", "property": "fax", "rule": "set_or_clear"}]
    deployment.write_goal("customers", goal({"null_values": ["", "NULL", "n/a"]}, mappings))
    first = "email,name,fax\na@x.com,A,1\nb@x.com,B,2\nc@x.com,C,3\nd@x.com,D,4\n"
    second = "email,name,fax\na@x.com,NULL,NULL\nb@x.com,n/a,n/a\nc@x.com,,\nd@x.com,null,N/A\n"
    deployment.put_encrypted("in/customers_1.csv.gpg", first, mtime=OLD)
    deployment.put_encrypted("in/customers_2.csv.gpg", second, mtime=OLD)
    result = deployment.run()
    assert [f.status for f in result.goals[0].files] == ["imported", "imported"], result.goals[0].files
    assert deployment.properties() == [
        {"email": ["a@x.com"], "name": ["A"]},
        {"email": ["b@x.com"], "name": ["B"]},
        {"email": ["c@x.com"], "name": ["C"]},
        {"email": ["d@x.com"], "name": ["null"], "fax": ["N/A"]},  # null values match exactly
    ]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) - 12]


def _bad_crc(data: bytes) -> bytes:
    return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]


@pytest.mark.parametrize(
    ("damage", "cause"),
    [(_truncated, "cannot decompress (gzip): Compressed file ended before the end-of-stream marker was reached"),
     (_bad_crc, "cannot decompress (gzip): CRC check failed")],
    ids=["truncated", "bad-crc"],
)
def test_corrupt_gzip_inside_pgp_fails_the_file_and_writes_nothing(
    deployment: Deployment, damage: Callable[[bytes], bytes], cause: str
) -> None:
    deployment.write_goal("customers", goal(pattern="customers_*.csv.gz.gpg"))
    plain = "".join(f"u{i}@x.com,User {i}\n" for i in range(200))
    data = damage(gzip.compress(f"email,name\n{plain}".encode()))
    deployment.put_encrypted("in/customers_1.csv.gz.gpg", data, mtime=OLD, compress=False)
    for _ in range(2):  # not marked imported: the next run tries it again
        result = deployment.run()
        file = result.goals[0].files[0]
        assert (result.status, result.exit_code, file.status) == ("failed", 1, "failed")
        assert file.error is not None
        assert file.error.startswith("goal customers, file ")
        assert "customers_1.csv.gz.gpg" in file.error
        assert cause in file.error
        assert deployment.profiles() == []
