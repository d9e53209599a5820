"""What the operator's files and terminal receive from hostile or merely unusual data: Parquet exports whose
names and types are what a reader expects, reject files that can be fixed and sent back, and remote names
that cannot drive the terminal (issue 18, items 7 to 9)."""

from __future__ import annotations

import csv
import io
import shutil
from typing import Any

import polars as pl

from tests.e2e.test_export import download, exported
from tests.fixtures.connector import Deployment
from tests.fixtures.sshd import SshServer
from tests.hostile.helpers import OLD, put_raw

MEMBERS: dict[str, Any] = {
    "kind": "import-profiles", "name": "members",
    "files": [{"name": "members", "directory": "in", "pattern": "members_*.csv"}], "stable_after_s": 0,
    "identifiers": [{"field": "email", "property": "email"}],
    "events": [{"type": "visit", "id": "visit", "time": "at", "properties": {"page": "page"}}],
    "mappings": [{"field": "zip", "property": "zip"}, {"field": "spent", "property": "spent", "rule": "sum"},
                 {"field": "visits", "property": "visits", "rule": "sum"}],
}


# ── 9. Parquet exports ───────────────────────────────────────────────────────────────


def test_a_parquet_name_keeps_one_extension_and_sums_are_numbers(deployment: Deployment, sshd: SshServer) -> None:
    shutil.copy(deployment.keys.partner_public, deployment.dir / "keys" / "partner.public.asc")
    deployment.update_connector({"pgp": {"encrypt": {"recipients": ["keys/partner.public.asc"]}}})
    deployment.write_goal("members", MEMBERS)
    deployment.put("in/members_1.csv", "email,zip,spent,visits,visit,at,page\n"
                   "a@x.com,01234,37.5,2,V1,2026-11-01,/home\nb@x.com,99,,,V2,2026-11-02,/cart\n", mtime=OLD)
    deployment.write_goal("out", {
        "kind": "export-profiles", "name": "out", "format": "parquet", "filename": "members_{run}.parquet",
        "events": {"types": "all"},
        "columns": [{"column": "email", "property": "email"}, {"column": "zip", "property": "zip"},
                    {"column": "spent", "property": "spent"}, {"column": "visits", "property": "visits"}]})
    result = deployment.run()
    assert result.status == "success", result
    files = {f.path.rsplit("/", 1)[1]: f for f in exported(result, "out")}
    assert sorted(files) == [f"members_{result.run}.parquet.gpg", f"members_{result.run}_visit.parquet.gpg"]

    encrypted, plain = deployment.dir / "x.gpg", deployment.dir / "x.parquet"
    encrypted.write_bytes(download(deployment, sshd, files[f"members_{result.run}.parquet.gpg"].path))
    deployment.keys.gpg_decrypt_as_partner(encrypted, plain)
    members = pl.read_parquet(io.BytesIO(plain.read_bytes()))
    # Every value of spent and visits is a number (sums are); zip holds digits but is text, and stays text.
    assert members.schema == pl.Schema({"email": pl.List(pl.String), "zip": pl.List(pl.String),
                                        "spent": pl.List(pl.Float64), "visits": pl.List(pl.Float64)})
    assert members.sort("email").to_dicts() == [
        {"email": ["a@x.com"], "zip": ["01234"], "spent": [37.5], "visits": [2.0]},
        {"email": ["b@x.com"], "zip": ["99"], "spent": [], "visits": []}]


# ── 8. reject files ──────────────────────────────────────────────────────────────────

CUSTOMERS: dict[str, Any] = {
    "kind": "import-profiles", "name": "customers",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*.csv*"}], "stable_after_s": 0,
    "max_reject_ratio": 0.9,
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": "name", "property": "name"}, {"field": "points", "property": "points", "rule": "sum"}],
}


def test_a_reject_file_holds_each_rejected_row_as_read_with_why(deployment: Deployment) -> None:
    deployment.write_goal("customers", CUSTOMERS)
    deployment.put_encrypted("in/customers_1.csv.gpg", 'email,name,points\n'
                             'a@x.com,Ann,1\n'
                             ',Nobody,5\n'              # row 2: no identifier: the whole row is rejected
                             'c@x.com,"Cé, Jr",ten\n'   # row 3: one bad cell, the rest imports
                             'd@x.com,Dee,4,extra\n'    # row 4: a field too many: unreadable as a row
                             'e@x.com,Eve,2\n', mtime=OLD)
    result = deployment.run()
    assert result.status == "success", result
    folder = deployment.dir / "state" / "rejects" / result.run
    assert sorted(p.name for p in folder.iterdir()) == ["customers_1.csv"]
    with (folder / "customers_1.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["email", "name", "points", "_row", "_column", "_reason", "_record"],
        ["", "Nobody", "5", "2", "", "no usable identifier: email all empty", ""],
        ["c@x.com", "Cé, Jr", "ten", "3", "points", "`points` is not a number", ""],
        ["", "", "", "4", "", "expected 3 fields, found 4", "d@x.com,Dee,4,extra"],
    ]


def test_reject_columns_do_not_clash_with_the_files_own(deployment: Deployment) -> None:
    deployment.write_goal("customers", {**CUSTOMERS, "files": [
        {"name": "customers", "directory": "in", "pattern": "customers_*.csv*"}]})
    deployment.put("in/customers_2.csv", "email,name,points,_reason\nb@x.com,Bo,x,mine\n", mtime=OLD)
    result = deployment.run()
    folder = deployment.dir / "state" / "rejects" / result.run
    with (folder / "customers_2.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["email", "name", "points", "_reason", "_row", "_column", "__reason", "_record"]
    assert rows[1][:5] == ["b@x.com", "Bo", "x", "mine", "1"]


# ── 7. remote names on the operator's terminal ───────────────────────────────────────

HOSTILE_NAMES = {
    "evil\x1b]0;PWNED\x07\x1b[2Jx.csv": "evil\\x1b]0;PWNED\\x07\\x1b[2Jx.csv",
    "bidi\u202egpj.csv": "bidi\\u202egpj.csv",
    "nl\n2026-01-01 00:00:00,000 ERROR sftp_connector: forged.csv":
        "nl\\n2026-01-01 00:00:00,000 ERROR sftp_connector: forged.csv",
}
RAW = ("\x1b", "\x07", "\u202e")


def test_hostile_names_reach_the_terminal_visibly_escaped(deployment: Deployment) -> None:
    deployment.write_goal("customers", {**CUSTOMERS, "files": [
        {"name": "customers", "directory": "in", "pattern": "*.csv"}]})
    deployment.remote.user.mkdir(f"{deployment.remote.local.name}/in")
    for name in HOSTILE_NAMES:
        put_raw(deployment, f"in/{name}".encode(), "email,name\na@x.com,A\n")

    outputs = {}
    for command in (["run"], ["preview", "customers"], ["history"]):
        done = deployment.cli("--log-format", "plain", *command)
        assert "Traceback" not in done.stderr, done.stderr
        outputs[command[0]] = done.stdout + done.stderr
    for command, text in outputs.items():
        assert not [c for c in RAW if c in text], (command, text)
        # The newline in a name never starts a line of its own: shown as \n, or (in a plain log line, which
        # escapes no newline) the rest of the record is indented under it.
        forged = [line for line in text.splitlines() if "2026-01-01 00:00:00,000 ERROR" in line
                  and "\\n2026-01-01" not in line and not line.startswith("    ")]
        assert not forged, (command, text)
    for shown in HOSTILE_NAMES.values():
        assert shown in outputs["run"].replace("\n", ""), (shown, outputs["run"])
    # preview stops at the first file it cannot read, naming it: the first in name order
    assert "bidi\\u202egpj.csv: not read" in outputs["preview"], outputs["preview"]
    assert "bidi\\u202egpj.csv: not read" in outputs["history"], outputs["history"]  # the goal's error

    done = deployment.cli("run", "--json")  # JSON escapes control characters as JSON does
    assert "\x1b" not in done.stdout and "\\u001b]0;PWNED" in done.stdout
