"""Malformed CSV files, end to end, each with the outcome an operator expects.

Row-level damage (an unbalanced quote, a 50 MB field, a NUL byte, too many or too few
fields) rejects those rows alone: they are counted, written with their reason to the
private rejects file, and the file's other rows are imported. File-level damage (bytes that
are not UTF-8, a doubled header name, an empty file, too many rejected rows) refuses the
whole file with a message naming goal, file and cause, and nothing of it is written. A
header-only file is a success with nothing to do. All in one `sftp-connector run`.
"""

from __future__ import annotations

import csv
import stat

from sftp_connector import rejects as rejects_file
from tests.fixtures.connector import Deployment
from tests.hostile.helpers import OLD, cli_run, error_of, files_of, store_contents

GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "*.csv"}]
stable_after_s: 0
identifiers: [{field: email, property: email}]
mappings: [{field: name, property: name}]
"""
HEADER = "email,name\n"
LONG = 131_072  # the longest field a row may hold (csvio.records.MAX_FIELD)


def good(tag: str, count: int = 30) -> str:
    return "".join(f"{tag}-{i}@example.test,{tag} {i}\n" for i in range(count))


# name → (content, rejected rows' reasons) for files imported with rejects
ROW_DAMAGE = {
    "unbalanced_quote.csv": (HEADER + good("quote") + 'q@example.test,"never closed\n' + good("quote2"),
                             ["unbalanced quote"]),
    "field_50mb.csv": (HEADER + good("big") + "huge@example.test," + "x" * 50_000_000 + "\n" + good("big2"),
                       [f"a field is longer than {LONG} bytes"]),
    # beside a ragged row, so the stdlib reader takes the file: the same limit, the same reason
    "long_field_slow_path.csv": (
        HEADER + good("slow") + "long@example.test," + "y" * 200_000 + "\nx,y,z\n" + good("slow2"),
        [f"a field is longer than {LONG} bytes", "expected 2 fields, found 3"]),
    "nul_byte.csv": (HEADER + good("nul") + "nul@example.test,N\x00L\n" + good("nul2"), ["NUL byte"]),
    "ragged.csv": (HEADER + good("ragged") + "more@example.test,a,b\nfewer@example.test\n" + good("ragged2"),
                   ["expected 2 fields, found 3", "expected 2 fields, found 1"]),
}
# name → (content, cause) for files refused whole
FILE_DAMAGE = {
    "not_utf8.csv": (HEADER.encode() + good("utf").encode() + b"bad@example.test,M\xe4rz\n",
                     "row 31: not valid utf-8; set csv.encoding, e.g. cp1252"),
    "duplicate_header.csv": ("email,name,name\n" + good("dup"), "header: duplicate column names: name"),
    "empty.csv": ("", "empty file: no header row"),
    "utf16.csv": ((HEADER + good("u16", 2)).encode("utf-16"),
                  "the file starts with a UTF-16 byte order mark: it is UTF-16 text, not utf-8; set csv.encoding: "
                  "utf-16"),
    "excel_sep.csv": ("sep=;\nemail;name\na@example.test;A\n",
                      "its first line `sep=;` is Excel's note of the delimiter `;`, but csv.delimiter is `,`: set "
                      "csv.delimiter: \";\""),
    "mostly_bad.csv": (HEADER + good("mostly", 5) + "a,b,c\n" * 5,
                       "5 of 10 rows rejected (50.0%), above max_reject_ratio 5.0%: nothing was imported "
                       "(see the rejects file)"),
}


def test_malformed_files_reject_rows_or_the_whole_file_as_an_operator_expects(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL)
    for name, (content, _) in {**ROW_DAMAGE, **FILE_DAMAGE}.items():
        deployment.put(f"in/{name}", content, mtime=OLD)
    deployment.put("in/header_only.csv", HEADER, mtime=OLD)
    before = store_contents(deployment)
    assert before["profile"] == before["imported_file"] == []

    done, run = cli_run(deployment)

    assert (done.returncode, run["status"]) == (1, "failed")
    files = files_of(run)
    header_only = files.pop("header_only.csv")
    assert (header_only["status"], header_only["rows_read"], header_only["rows_applied"]) == ("imported", 0, 0)
    for name, (_, reasons) in ROW_DAMAGE.items():
        file = files.pop(name)
        assert (file["status"], file["rows_read"], file["rows_rejected"], file["rows_applied"]) == (
            "imported", 60 + len(reasons), len(reasons), 60), (name, file)
        rejects = deployment.dir / "state" / "rejects" / run["run"] / rejects_file.file_name(file["path"])
        assert stat.S_IMODE(rejects.stat().st_mode) == 0o600  # rejected rows are customer data in clear
        with rejects.open(newline="", encoding="utf-8") as handle:
            assert [row["_reason"] for row in csv.DictReader(handle)] == reasons, name
    assert {name: error_of(file, "customers", deployment.remote.remote) for name, file in files.items()} == {
        name: cause for name, (_, cause) in FILE_DAMAGE.items()}

    emails = sorted(p["email"][0] for p in deployment.properties())
    expected = [line.split(",")[0] for name in ROW_DAMAGE for line in ROW_DAMAGE[name][0].splitlines()[1:]
                if line.count(",") == 1 and "\x00" not in line and '"' not in line and len(line) < LONG]
    assert emails == sorted(expected)  # the good rows of row-damaged files, nothing of the refused files
    assert len(emails) == len(ROW_DAMAGE) * 60
    recorded = {row["path"].rsplit("/", 1)[1] for row in store_contents(deployment)["imported_file"]}
    assert recorded == {*ROW_DAMAGE, "header_only.csv"}  # a refused file is not marked imported: tried next run


def test_excels_sep_line_naming_the_configured_delimiter_is_skipped(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL.replace("stable_after_s: 0", "stable_after_s: 0\ncsv: {delimiter: \";\"}"))
    deployment.put("in/excel.csv", "\ufeffsep=;\r\nemail;name\r\na@example.test;A\r\nb@example.test;B\r\n", mtime=OLD)
    _, run = cli_run(deployment)
    file = files_of(run)["excel.csv"]
    assert (file["status"], file["rows_read"], file["rows_applied"]) == ("imported", 2, 2), file
    assert sorted(p["name"][0] for p in deployment.properties()) == ["A", "B"]
