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

import pytest

from tests.fixtures.connector import Deployment
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
               damage: str | None = None) -> None:
    """Encrypt a one-row file as the partner would (to `recipient`, default the connector), damage it, drop it."""
    keys = deployment.keys
    plain, encrypted = deployment.dir / "plain.tmp", deployment.dir / "encrypted.tmp"
    plain.write_text(rows(name.split(".")[0]))
    keys.gpg_encrypt(plain, encrypted, recipient_fpr=recipient or keys.connector_fpr, sign_with=signer)
    data = encrypted.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        middle = len(data) // 2
        data = data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 16]) + data[middle + 16:]
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
