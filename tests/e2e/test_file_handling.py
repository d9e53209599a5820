"""Which files are read, and what happens to them after: readiness, markers, moves, failures."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.connector import Deployment

GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv"}]
stable_after_s: 0
identifiers: [{field: email, property: email}]
mappings: [{field: name, property: name, rule: set}]
"""

OLD = time.time() - 3600


def statuses(result) -> list[tuple[str, str]]:
    return [(f.path.rsplit("/", 1)[1], f.status) for g in result.goals for f in g.files]


def test_regex_and_glob_match_whole_names(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL.replace('pattern: "customers_*.csv"', "regex: '^customers_(\\d+)\\.csv$'"))
    for name in ("customers_1.csv", "customers_x.csv", "customers_2.csv.bak", "xcustomers_3.csv"):
        deployment.put(f"in/{name}", "email,name\na@x.com,A\n", mtime=OLD)
    assert statuses(deployment.run()) == [("customers_1.csv", "imported")]


def test_a_file_still_growing_is_not_read(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL.replace("stable_after_s: 0", "stable_after_s: 1.5"))
    deployment.put("in/customers_1.csv", "email,name\na@x.com,A\n")
    deployment.put("in/customers_2.csv", "email,name\nb@x.com,B\n")

    def partner_keeps_writing() -> None:
        time.sleep(0.5)
        with deployment.remote_path("in/customers_2.csv").open("a") as handle:
            handle.write("c@x.com,C\n")

    writer = threading.Thread(target=partner_keeps_writing)
    writer.start()
    result = deployment.run()
    writer.join()
    assert statuses(result) == [("customers_1.csv", "imported"), ("customers_2.csv", "skipped_unstable")]
    assert statuses(deployment.run()) == [("customers_1.csv", "skipped_unchanged"), ("customers_2.csv", "imported")]


def test_done_marker_gates_the_import(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL + 'done_marker: ".done"\nafter_import: delete\n')
    deployment.put("in/customers_1.csv", "email,name\na@x.com,A\n", mtime=OLD)
    assert statuses(deployment.run()) == [("customers_1.csv", "skipped_unstable")]
    deployment.put("in/customers_1.csv.done", "", mtime=OLD)
    assert statuses(deployment.run()) == [("customers_1.csv", "imported")]
    assert not deployment.remote_path("in/customers_1.csv").exists()
    assert not deployment.remote_path("in/customers_1.csv.done").exists()


def test_after_import_moves_the_file_after_commit(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL + "after_import: {move_to: archive/}\n")
    deployment.put("in/customers_1.csv", "email,name\na@x.com,A\n", mtime=OLD)
    assert statuses(deployment.run()) == [("customers_1.csv", "imported")]
    assert deployment.remote_path("in/archive/customers_1.csv").exists()
    assert not deployment.remote_path("in/customers_1.csv").exists()
    assert [p["name"] for p in deployment.properties()] == [["A"]]


def test_a_failed_file_writes_nothing_moves_to_error_and_the_next_file_goes_on(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL + "on_error: {move_to: error/}\nmax_reject_ratio: 0.3\n")
    deployment.put("in/customers_1.csv", "email,name\na@x.com,A\n,B\n,C\n", mtime=OLD)
    deployment.put("in/customers_2.csv", "email,name\nd@x.com,D\n", mtime=OLD)
    result = deployment.run()
    assert statuses(result) == [("customers_1.csv", "failed"), ("customers_2.csv", "imported")]
    assert result.status == "failed"
    error = result.goals[0].files[0].error
    assert error.startswith("goal customers, file ")
    assert "customers_1.csv: 2 of 3 rows rejected (66.7%), above max_reject_ratio 30.0%" in error
    assert [p["email"] for p in deployment.properties()] == [["d@x.com"]]
    assert deployment.remote_path("in/error/customers_1.csv").exists()
    rejects = (deployment.dir / "state" / "rejects" / result.run).glob("*.csv")
    assert "no usable identifier" in next(rejects).read_text()


def test_encrypted_file_with_pgp_disabled_is_a_clear_error(deployment: Deployment) -> None:
    text = deployment.config_path.read_text().replace("pgp:\n", "pgp:\n  enabled: false\n")
    deployment.config_path.write_text(text)
    deployment.write_goal("customers", GOAL.replace("customers_*.csv", "customers_*"))
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,name\na@x.com,A\n", mtime=OLD)
    result = deployment.run()
    assert "OpenPGP-encrypted but pgp.enabled is false" in result.goals[0].files[0].error
    assert deployment.profiles() == []


@pytest.mark.parametrize("armor", [False, True])
def test_signed_and_armored_files_import_and_record_the_signer(deployment: Deployment, armor: bool) -> None:
    deployment.write_goal("customers", GOAL.replace("customers_*.csv", "customers_*"))
    deployment.put_encrypted("in/customers_1.asc", "email,name\na@x.com,A\n", mtime=OLD, armor=armor,
                             sign_with=deployment.keys.stranger_fpr, compress=False)
    result = deployment.run()
    file = result.goals[0].files[0]
    assert file.status == "imported", file.error
    assert file.signer  # an unknown signer still imports, and is recorded


def test_wrong_passphrase_fails_the_file_and_it_is_retried(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment.write_goal("customers", GOAL.replace("customers_*.csv", "customers_*"))
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,name\na@x.com,A\n", mtime=OLD)
    assert statuses(deployment.run()) == [("customers_1.csv.gpg", "imported")]
    deployment.put_encrypted("in/customers_2.csv.gpg", "email,name\nb@x.com,B\n", mtime=OLD)
    monkeypatch.setenv("TEST_PGP_PASSPHRASE", "wrong")
    failed = deployment.run()
    error = failed.goals[0].files[-1].error
    assert "wrong passphrase" in error
    assert error.startswith(f"goal customers, file {deployment.remote.remote}/in/customers_2.csv.gpg: "), error
    monkeypatch.setenv("TEST_PGP_PASSPHRASE", deployment.keys.passphrase)
    again = deployment.run()
    assert statuses(again)[-1] == ("customers_2.csv.gpg", "imported")


def test_changed_host_key_fails_every_goal_without_retrying(deployment: Deployment, sshd) -> None:
    deployment.write_goal("customers", GOAL)
    (deployment.dir / "keys" / "known_hosts").write_text(sshd.changed_known_hosts.read_text())
    result = deployment.run()
    assert result.status == "failed"
    assert "host key changed" in result.goals[0].error


def test_many_small_files_fetched_ahead_import_each_once_and_fail_alone(deployment: Deployment) -> None:
    # Each small file is downloaded and its decryption started while the one before merges: the results are
    # those of one file at a time, a broken file among them fails alone, and nothing is left in state/tmp.
    deployment.write_goal("customers", GOAL.replace("customers_*.csv", "customers_*.csv*"))
    for i in range(12):
        deployment.put_encrypted(f"in/customers_{i:02d}.csv.gpg", f"email,name\nc{i}@x.com,C{i}\n", mtime=OLD)
    deployment.put("in/customers_05b.csv.gpg", b"not OpenPGP at all\n", mtime=OLD)
    first = deployment.run()
    statuses = {f.path.rsplit("/", 1)[1]: f.status for f in first.goals[0].files}
    assert statuses.pop("customers_05b.csv.gpg") == "failed"
    assert set(statuses.values()) == {"imported"} and len(statuses) == 12
    assert sorted(p["email"][0] for p in deployment.properties()) == sorted(f"c{i}@x.com" for i in range(12))
    again = deployment.run()
    assert [f.status for f in again.goals[0].files].count("skipped_unchanged") == 12
    tmp = deployment.dir / "state" / "tmp"
    assert not [p for p in tmp.rglob("*") if p.is_file()]
