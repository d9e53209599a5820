"""`preview GOAL` over the real sshd and gpg: matched files, linked sets, columns and rows of the decrypted
first set, warnings, exit codes, and that nothing is written or moved."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from tests.e2e.test_linked import CUSTOMERS_1, CUSTOMERS_2, GOAL, LINES_1, LINES_2, ORDERS_1, ORDERS_2, drop
from tests.fixtures.connector import Deployment

OLD = time.time() - 3600
LONG = "x" * 60

CUSTOMERS: dict[str, Any] = {
    "kind": "import-profiles", "name": "customers",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*.csv.gpg"}],
    "stable_after_s": 30, "after_import": "delete",
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": "name", "property": "name"}, {"field": "note", "property": "note"}],
}
ROWS = f"email,name,note\na@x.com,Ann,{LONG}\nb@x.com,Bob,\nc@x.com,Cy,hi\nd@x.com,Dee,hey\ne@x.com,Eve,yo\n"


def shop(**changes: Any) -> dict[str, Any]:
    """The linked-set goal of test_linked, changed."""
    return {**copy.deepcopy(GOAL), **changes}


def test_an_encrypted_file_shows_columns_samples_and_first_rows(deployment: Deployment) -> None:
    deployment.write_goal("customers", CUSTOMERS)
    deployment.put_encrypted("in/customers_1.csv.gpg", ROWS, mtime=OLD)
    done = deployment.cli("preview", "customers")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "readiness (whether a file is still being written) is not checked" in out
    assert "reading customers_1.csv.gpg (the first matched file in name order)" in out
    assert "/in/customers_1.csv.gpg" in out  # matched files show the remote path
    assert "customers_1.csv.gpg (file customers): 5 row(s), 3 column(s)" in out
    assert "a@x.com, b@x.com, c@x.com" in out and "Ann, Bob, Cy" in out  # up to 3 distinct samples
    assert "x" * 39 + "…" in out and LONG not in out  # long values are cut to 40 characters
    assert "first 5 of 5 row(s)" in out and "Eve" in out and "warning:" not in out
    limited = deployment.cli("preview", "customers", "--rows", "2").stdout
    assert "first 2 of 5 row(s)" in limited and "Bob" in limited and "Eve" not in limited
    assert deployment.profiles() == []
    assert deployment.remote_path("in/customers_1.csv.gpg").exists()  # after_import: delete is not applied
    assert not any((deployment.dir / "state" / "tmp").rglob("*.*"))  # the plaintext is gone


def test_unreadable_rows_are_counted(deployment: Deployment) -> None:
    deployment.write_goal("customers", CUSTOMERS)
    deployment.put_encrypted("in/customers_1.csv.gpg", 'email,name,note\na@x.com,Ann,1\nb@x.com,"Bob,2,3,4\n',
                             mtime=OLD)
    done = deployment.cli("preview", "customers")
    assert done.returncode == 0, done.stderr
    assert "1 unreadable row(s) in customers_1.csv.gpg; first: row 2" in done.stdout


def test_a_linked_set_is_paired_by_wildcard_and_a_missing_file_is_reported(deployment: Deployment) -> None:
    deployment.write_goal("shop", shop(after_import="delete"))
    drop(deployment, 1, CUSTOMERS_1, ORDERS_1, LINES_1)
    drop(deployment, 2, CUSTOMERS_2, ORDERS_2, LINES_2)
    deployment.put_encrypted("in/customers/customers_7.csv.gpg", CUSTOMERS_1, mtime=OLD)
    deployment.put_encrypted("in/orders/orders_7.csv.gpg", ORDERS_1, mtime=OLD)
    done = deployment.cli("preview", "shop", "--rows", "1")
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    for n in (1, 2):
        assert (f"customers_{n}.csv.gpg [{n}] → orders: orders_{n}.csv.gpg, order_lines: order_lines_{n}.csv.gpg"
                in lines)
    seven = next(line for line in lines if line.startswith("customers_7.csv.gpg [7] → orders: orders_7.csv.gpg"))
    assert "missing: linked file order_lines is missing for customers_7.csv.gpg" in seven
    assert ("reading customers_1.csv.gpg, orders_1.csv.gpg, order_lines_1.csv.gpg "
            "(the first complete linked set in name order)") in lines
    assert "orders_1.csv.gpg (file orders): 3 row(s), 5 column(s)" in lines
    assert "warning:" not in done.stdout
    assert deployment.profiles() == [] and deployment.read("events") == []
    assert all(deployment.remote_path(f"in/orders/orders_{n}.csv.gpg").exists() for n in (1, 2, 7))


def test_fields_missing_from_their_files_and_shared_properties_warn(deployment: Deployment) -> None:
    goal = shop(mappings=[*GOAL["mappings"], {"field": "nmae", "property": "name"},
                          {"field": "orders.amout", "property": "spent", "rule": "sum"}])
    goal["events"] = [{**GOAL["events"][0], "time": "ordered_at"}]
    deployment.write_goal("shop", goal)
    deployment.write_goal("crm", {**CUSTOMERS, "name": "crm", "mappings": [{"field": "name", "property": "name"}]})
    drop(deployment, 1, CUSTOMERS_1, ORDERS_1, LINES_1)
    done = deployment.cli("preview", "shop")
    assert done.returncode == 0, done.stderr
    warnings = sorted(line for line in done.stdout.splitlines() if line.startswith("warning: "))
    assert warnings == [
        "warning: event order names field 'ordered_at', which is not in orders_1.csv.gpg (file orders; fields: "
        "order_id, customer_id, amount, channel, order_date)",
        "warning: mapping names field 'amout', which is not in orders_1.csv.gpg (file orders; fields: "
        "order_id, customer_id, amount, channel, order_date)",
        "warning: mapping names field 'nmae', which is not in customers_1.csv.gpg (file customers; fields: "
        "customer_id, name)",
        "warning: profile property name is also written by goal(s) crm",
    ]


@pytest.mark.parametrize("bad", ["passphrase", "corrupt"])
def test_a_file_that_cannot_be_decrypted_exits_1_naming_goal_and_file(deployment: Deployment, bad: str) -> None:
    deployment.write_goal("customers", CUSTOMERS)
    path = deployment.put_encrypted("in/customers_1.csv.gpg", ROWS, mtime=OLD)
    env = {"TEST_PGP_PASSPHRASE": "Wr0ng-Secret-Value"} if bad == "passphrase" else None
    if bad == "corrupt":
        deployment.put("in/customers_1.csv.gpg", path.read_bytes()[:60], mtime=OLD)
    done = deployment.cli("preview", "customers", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "preview failed: goal customers, file /" in done.stderr and "/in/customers_1.csv.gpg: " in done.stderr
    assert ("wrong passphrase" if bad == "passphrase" else "corrupt or truncated OpenPGP data") in done.stderr
    assert "state/tmp" not in done.stderr  # the remote file is named, not the local temp copy
    assert "Wr0ng-Secret-Value" not in done.stdout + done.stderr
    assert deployment.keys.passphrase not in done.stdout + done.stderr


def test_an_unknown_or_export_goal_exits_2(deployment: Deployment) -> None:
    deployment.write_goal("customers", CUSTOMERS)
    deployment.write_goal("out", {"kind": "export-profiles", "name": "out",
                                  "columns": [{"column": "id", "value": "profile_id"}]})
    unknown = deployment.cli("preview", "nope")
    assert unknown.returncode == 2 and "no goal named 'nope'" in unknown.stderr
    export = deployment.cli("preview", "out")
    assert export.returncode == 2 and "preview shows import goals" in export.stderr
