"""Files whose rows revisit one profile thousands of times, end to end over sshd and gpg, on both stores.

0.3.4 applied such rows one round per occurrence: 32,000 rows of one profile took 154 s.
They now apply in one pass per batch; the suite's timeout bounds these tests (a test of
speed belongs to benchmarks/, a wall that returns shows up here as a timeout).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.test_linked import by_crm
from tests.fixtures.connector import Deployment

OLD = time.time() - 3600

GOAL = """\
kind: import-profiles
name: accounts
files: [{name: accounts, directory: in, pattern: "accounts_*.csv.gpg"}]
stable_after_s: 0
identifiers: [{field: id, property: crm_id}]
mappings:
  - {field: name, property: name, rule: set}
  - {field: first_seen, property: first_seen, rule: set_if_empty}
  - {field: status, property: status, rule: set_or_clear}
  - {field: tag, property: tags, rule: add}
  - {field: points, property: points, rule: sum}
"""


def accounts(rows: int, *, who: str = "ACME") -> str:
    lines = ["id,name,first_seen,status,tag,points"]
    lines += [f"{who},Name {n},{'' if n < 5 else f'2026-01-{n % 28 + 1:02d}'},{'' if n % 2 else 'open'},"
              f"t{n % 40},{n % 7}" for n in range(rows)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(120)  # 0.3.4 took 154 s here; 2-4 s now
def test_thirty_two_thousand_rows_of_one_profile_apply_in_file_order(deployment: Deployment) -> None:
    deployment.write_goal("accounts", GOAL)
    deployment.put_encrypted("in/accounts_1.csv.gpg", accounts(32_000), mtime=OLD)
    result = deployment.run()
    assert result.status == "success", [g.error for g in result.goals]
    file = result.goals[0].files[0]
    assert (file.counts.rows_read, file.counts.rows_applied) == (32_000, 32_000)
    profile = by_crm(deployment)["ACME"]
    assert profile["name"] == ["Name 31999"]
    assert profile["first_seen"] == ["2026-01-06"]  # row 5's: the first non-empty value
    assert "status" not in profile  # the last row's cell is empty: cleared
    assert profile["tags"] == [f"t{n}" for n in range(40)]
    assert profile["points"] == [sum(n % 7 for n in range(32_000))]
    assert (result.goals[0].profiles_created, result.goals[0].profiles_updated) == (1, 0)


def test_a_re_import_of_a_repeated_profile_adds_only_the_differences(deployment: Deployment) -> None:
    deployment.write_goal("accounts", GOAL)
    deployment.put_encrypted("in/accounts_1.csv.gpg", accounts(20_000), mtime=OLD)
    assert deployment.run().status == "success"
    edited = accounts(20_000).replace(",t39,", ",t40,")  # every 40th row's tag changes
    edited = edited.replace("\nACME,Name 7,", "\nACME,Name 7x,")
    deployment.put_encrypted("in/accounts_1.csv.gpg", edited, mtime=OLD + 60)
    result = deployment.run()
    file: Any = result.goals[0].files[0]
    assert file.status == "imported", file.error
    assert (file.counts.rows_applied, file.counts.rows_unchanged) == (501, 19_499)
    profile = by_crm(deployment)["ACME"]
    assert profile["points"] == [sum(n % 7 for n in range(20_000))]  # unchanged amounts: nothing added again
    assert profile["tags"][-1] == "t40"


def test_a_placeholder_identifier_shared_by_many_rows_beside_distinct_ones(deployment: Deployment) -> None:
    deployment.write_goal("accounts", GOAL)
    body = accounts(30_000, who="unknown").splitlines()
    mixed = [body[0], *(line if n % 3 else line.replace("unknown,", f"C{n},", 1) for n, line in enumerate(body[1:]))]
    deployment.put_encrypted("in/accounts_1.csv.gpg", "\n".join(mixed) + "\n", mtime=OLD)
    result = deployment.run()
    assert result.status == "success", [g.error for g in result.goals]
    profiles = by_crm(deployment)
    assert len(profiles) == 10_001
    shared = [n for n in range(30_000) if n % 3]
    assert profiles["unknown"]["points"] == [sum(n % 7 for n in shared)]
    assert profiles["unknown"]["name"] == [f"Name {shared[-1]}"]
    assert profiles["C3"]["points"] == [3]
