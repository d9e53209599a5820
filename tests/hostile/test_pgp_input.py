"""Hostile or broken OpenPGP files, end to end: each fails alone with goal, file and cause, and writes nothing.

One deployment requires the partner's signature (`require_signature_from`). A seed file is
imported first; then a truncated file, one with flipped bytes, one encrypted to another
connector's key, one signed by an unknown key, one signed by a known but unexpected key and
an unsigned one are dropped beside it, and `sftp-connector run` must fail each of them with
its own cause, leave the store exactly as the seed left it, print no traceback, keep no
plaintext, and try them all again on the next run. A wrong passphrase fails every file the
same way, and writes nothing either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.connector import ROOT, Deployment
from tests.hostile.helpers import OLD, cli_run, error_of, files_of, store_contents

GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv.gpg"}]
stable_after_s: 0
identifiers: [{field: email, property: email}]
mappings: [{field: name, property: name}]
"""


def rows(tag: str) -> str:
    return f"email,name\n{tag}@example.test,{tag}\n"


def put_signed(deployment: Deployment, name: str, *, signer: str | None, recipient: str | None = None,
               damage: str | None = None, text: str | None = None) -> None:
    """Encrypt a file as the partner would (to `recipient`, default the connector), damage it, drop it.
    It holds one row named after the file unless text is given."""
    keys = deployment.keys
    plain, encrypted = deployment.dir / "plain.tmp", deployment.dir / "encrypted.tmp"
    plain.write_text(text or rows(name.split(".")[0]))
    keys.gpg_encrypt(plain, encrypted, recipient_fpr=recipient or keys.connector_fpr, sign_with=signer)
    data = encrypted.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        middle = len(data) // 2
        data = data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 16]) + data[middle + 16:]
    elif damage == "flip_end":
        data = data[:-40] + bytes(b ^ 0x5A for b in data[-40:-24]) + data[-24:]
    deployment.put(f"in/{name}", data, mtime=OLD)
    plain.unlink()
    encrypted.unlink()


@pytest.fixture
def signed_deployment(deployment: Deployment) -> Deployment:
    """The deployment, requiring the partner's signature, with a partner-signed seed file imported."""
    keys = deployment.keys
    deployment.update_connector({"pgp": {"decrypt": {
        "private_key": "keys/connector.private.asc", "passphrase": "${TEST_PGP_PASSPHRASE}",
        "verify_keys": [str(keys.partner_public), str(keys.other_public)],
        "require_signature_from": [keys.partner_fpr]}}})
    deployment.write_goal("customers", GOAL)
    put_signed(deployment, "customers_0_seed.csv.gpg", signer=keys.partner_fpr)
    assert deployment.run().status == "success"
    return deployment


def test_each_broken_or_unexpected_file_fails_alone_and_writes_nothing(
    signed_deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, keys = signed_deployment, signed_deployment.keys
    before = store_contents(deployment)
    partner = keys.partner_fpr
    put_signed(deployment, "customers_1_truncated.csv.gpg", signer=partner, damage="truncate")
    put_signed(deployment, "customers_2_flipped.csv.gpg", signer=partner, damage="flip")
    put_signed(deployment, "customers_3_other_key.csv.gpg", signer=partner, recipient=keys.other_fpr)
    put_signed(deployment, "customers_4_unknown_signer.csv.gpg", signer=keys.stranger_fpr)
    put_signed(deployment, "customers_5_unexpected_signer.csv.gpg", signer=keys.other_fpr)
    put_signed(deployment, "customers_6_unsigned.csv.gpg", signer=None)

    done, run = cli_run(deployment)
    assert (done.returncode, run["status"]) == (1, "failed")
    files = files_of(run)
    assert files.pop("customers_0_seed.csv.gpg")["status"] == "skipped_unchanged"
    causes = {name: error_of(file, "customers", deployment.remote.remote) for name, file in files.items()}
    assert causes["customers_1_truncated.csv.gpg"].startswith("corrupt or truncated OpenPGP data")
    assert causes["customers_2_flipped.csv.gpg"].startswith("corrupt or truncated OpenPGP data")
    assert causes["customers_3_other_key.csv.gpg"] == (
        f"no secret key for this file: it is encrypted to key {keys.other_encryption_keyid}; "
        "import the matching private key")
    unknown = causes["customers_4_unknown_signer.csv.gpg"]
    assert unknown.startswith("signed by unknown or unusable key ") and unknown.endswith(
        f"(is it in pgp.decrypt.verify_keys?), not by one of {partner}")
    assert causes["customers_5_unexpected_signer.csv.gpg"] == f"signed by {keys.other_fpr}, not by one of {partner}"
    assert causes["customers_6_unsigned.csv.gpg"] == f"signature required from {partner} but the file is unsigned"
    for name, file in files.items():  # the plain log says the same, once per file
        assert f"goal customers, file {file['path']}: " in done.stderr, name
    assert store_contents(deployment) == before
    tmp = deployment.dir / "state" / "tmp"
    assert not [p for p in tmp.rglob("*") if p.is_file()], "decrypted or downloaded copies were left behind"

    # Nothing was marked imported: the next run reads them all again (not skipped_unchanged), and with a wrong
    # passphrase a good file fails like the rest.
    put_signed(deployment, "customers_7_good.csv.gpg", signer=partner)
    monkeypatch.setenv("TEST_PGP_PASSPHRASE", "not the passphrase")
    again = deployment.run()
    statuses = {f.path.rsplit("/", 1)[1]: (f.status, f.error) for g in again.goals for f in g.files}
    assert statuses.pop("customers_0_seed.csv.gpg")[0] == "skipped_unchanged"
    good = statuses["customers_7_good.csv.gpg"]
    assert good[0] == "failed" and good[1].endswith(": wrong passphrase for the connector's private key"), good
    assert {status for status, _ in statuses.values()} == {"failed"}
    assert store_contents(deployment) == before


NOTED_GOAL = GOAL.replace("stable_after_s: 0\n",
                          "stable_after_s: 0\nprocessors: [{type: notes, field: email, to: NOTES}]\n")
BIG = "".join(f"big{i}@example.test,Name {i}\n" for i in range(250_000))
"""Rows enough for several batches: the first ones are merged long before gpg reaches the end."""


def noted_run(deployment: Deployment, processor_plugin: Path) -> tuple[dict[str, Any], list[str]]:
    """Run with the goal's rows noted by the `notes` plugin; return the run's JSON and the values noted.
    (The goal file is put back after: this process, which reads the store, has no such plugin.)"""
    notes = deployment.dir / "noted.txt"
    notes.unlink(missing_ok=True)
    deployment.write_goal("customers", NOTED_GOAL.replace("NOTES", str(notes)))
    done, run = cli_run(deployment, env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(processor_plugin)])})
    deployment.write_goal("customers", GOAL)
    assert done.returncode == (0 if run["status"] == "success" else 1), done.stderr
    return run, notes.read_text().splitlines() if notes.exists() else []


def test_a_big_file_altered_at_its_end_fails_after_its_rows_were_merged_and_keeps_nothing(
    deployment: Deployment, processor_plugin: Path
) -> None:
    """Without a required signature a lone file is merged while gpg decrypts it, so an altered file's rows
    reach the merge before gpg finds the damage at its end: the file fails with gpg's cause, and keeps no
    profile and no rejects file."""
    put_signed(deployment, "customers_0_seed.csv.gpg", signer=None)
    assert noted_run(deployment, processor_plugin)[0]["status"] == "success"
    before = store_contents(deployment)
    text = f"email,name\nnot,a,row\n{BIG}"  # a reject early on: no rejects file may be written either
    put_signed(deployment, "customers_1_big.csv.gpg", signer=None, damage="flip_end", text=text)

    run, noted = noted_run(deployment, processor_plugin)
    assert run["status"] == "failed"
    cause = error_of(files_of(run)["customers_1_big.csv.gpg"], "customers", deployment.remote.remote)
    assert cause.startswith("corrupt or truncated OpenPGP data"), cause
    assert "big0@example.test" in noted, "the rows were not read while gpg decrypted"
    assert store_contents(deployment) == before
    assert not (deployment.dir / "state" / "rejects" / run["run"]).exists()
    tmp = deployment.dir / "state" / "tmp"
    assert not [p for p in tmp.rglob("*") if p.is_file()], "decrypted or downloaded copies were left behind"


def test_with_a_signature_required_no_row_is_read_before_it_is_checked(
    signed_deployment: Deployment, processor_plugin: Path
) -> None:
    deployment, keys = signed_deployment, signed_deployment.keys
    assert noted_run(deployment, processor_plugin)[0]["status"] == "success"  # the seed, again for the new goal
    before = store_contents(deployment)
    put_signed(deployment, "customers_1_big.csv.gpg", signer=keys.other_fpr, text=f"email,name\n{BIG}")

    run, noted = noted_run(deployment, processor_plugin)
    assert run["status"] == "failed"
    cause = error_of(files_of(run)["customers_1_big.csv.gpg"], "customers", deployment.remote.remote)
    assert cause == f"signed by {keys.other_fpr}, not by one of {keys.partner_fpr}"
    assert not [value for value in noted if value.startswith("big")], "rows were read before the signature check"
    assert store_contents(deployment) == before
