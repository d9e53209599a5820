"""What an operator is told about an OpenPGP file that cannot be used, and passphrase-only files, which can
(issue 18, items 10, 11, 12, 16, 17): each message says what the file is and what to do, never gpg's raw
"decrypt_message failed: Unknown system error".

The keys of these cases are made here with the gpg command line, as a partner would make them: a key that
has since expired (made and used at a faked earlier time) and a key whose signing subkey was revoked.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.connector import Deployment
from tests.fixtures.gpg import PgpKeys, colons, gpg, gpg_env, short_home, stop_agent
from tests.hostile.helpers import OLD, cli_run, error_of, files_of, store_contents

GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv*"}]
stable_after_s: 0
identifiers: [{field: email, property: email}]
mappings: [{field: name, property: name}]
"""
SYMMETRIC = "partner-Sym-Pass-5150"


def rows(tag: str) -> str:
    return f"email,name\n{tag}@example.test,{tag}\n"


@dataclass(frozen=True)
class PartnerKeys:
    home: Path
    expired_fpr: str
    expired_public: Path
    revoked_fpr: str
    revoked_public: Path
    old_connector_fpr: str
    old_connector_private: Path
    """A connector key made at the expired key's time: gpg encrypts only to keys older than "now"."""


@pytest.fixture
def partner_keys(pgp_keys: PgpKeys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartnerKeys]:
    """A home holding the connector's public key, a key that expired on 2024-06-01 and a key whose signing
    subkey is to be revoked; the public keys exported for verify_keys. (Per test: a test revokes a key.)"""
    home, out = short_home(), tmp_path_factory.mktemp("partner")
    try:
        gpg(home, "--import", str(pgp_keys.connector_public))
        gpg(home, "--faked-system-time", "20240101T000000", "--passphrase", "", "--quick-gen-key",
            "Expired <expired@example.test>", "ed25519", "cert,sign", "2024-06-01")
        expired = next(r[9] for r in colons(home, "expired@example.test") if r[0] == "fpr")
        gpg(home, "--faked-system-time", "20240101T000000", "--passphrase", "", "--quick-gen-key",
            "Old connector <old@example.test>", "ed25519", "cert,sign", "never")
        old = next(r[9] for r in colons(home, "old@example.test") if r[0] == "fpr")
        gpg(home, "--faked-system-time", "20240101T000000", "--passphrase", "", "--quick-add-key", old, "cv25519",
            "encr", "never")
        gpg(home, "--armor", "--output", str(out / "old.private.asc"), "--export-secret-keys", old)
        gpg(home, "--passphrase", "", "--quick-gen-key", "Revoked <revoked@example.test>", "ed25519", "cert", "never")
        revoked = next(r[9] for r in colons(home, "revoked@example.test") if r[0] == "fpr")
        gpg(home, "--passphrase", "", "--quick-add-key", revoked, "ed25519", "sign", "never")
        for name, fpr in (("expired", expired), ("revoked", revoked)):
            gpg(home, "--armor", "--output", str(out / f"{name}.asc"), "--export", fpr)
        yield PartnerKeys(home, expired, out / "expired.asc", revoked, out / "revoked.asc", old,
                          out / "old.private.asc")
    finally:
        stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def revoke_signing_subkey(keys: PartnerKeys) -> None:
    """Revoke the signing subkey of the revoked key (reason: no longer used, "retired"); export it again."""
    subprocess.run(["gpg", "--homedir", str(keys.home), "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback",
                    "--command-fd", "0", "--edit-key", keys.revoked_fpr],
                   input="key 1\nrevkey\ny\n3\nretired\n\ny\nsave\n", env=gpg_env(), capture_output=True,
                   text=True, check=True)
    gpg(keys.home, "--armor", "--output", str(keys.revoked_public), "--export", keys.revoked_fpr)


def put_encrypted_in(deployment: Deployment, keys: PartnerKeys, name: str, *args: str, to: str = "") -> None:
    """Encrypt (and sign) one row to the connector (or `to`) with gpg ARGS, as the partner would; drop it on the
    server."""
    plain, encrypted = deployment.dir / "plain.tmp", deployment.dir / "encrypted.tmp"
    plain.write_text(rows(name.split(".")[0]))
    gpg(keys.home, "--trust-model", "always", "--recipient", to or deployment.keys.connector_fpr, *args,
        "--output", str(encrypted), "--encrypt", str(plain))
    deployment.put(f"in/{name}", encrypted.read_bytes(), mtime=OLD)
    plain.unlink()
    encrypted.unlink()


def put_symmetric(deployment: Deployment, keys: PartnerKeys, name: str, *args: str) -> None:
    plain, encrypted = deployment.dir / "plain.tmp", deployment.dir / "encrypted.tmp"
    plain.write_text(rows(name.split(".")[0]))
    gpg(keys.home, "--passphrase", SYMMETRIC, *args, "--output", str(encrypted), "--symmetric", str(plain))
    deployment.put(f"in/{name}", encrypted.read_bytes(), mtime=OLD)
    plain.unlink()
    encrypted.unlink()


def decrypt_settings(deployment: Deployment, **more: Any) -> dict[str, Any]:
    home = deployment.config().connector.pgp.gnupg_home
    return {"pgp": {"gnupg_home": str(home), "decrypt": {
        "private_key": "keys/connector.private.asc", "passphrase": "${TEST_PGP_PASSPHRASE}", **more}}}


def causes_of(deployment: Deployment) -> tuple[dict[str, Any], dict[str, str]]:
    _, run = cli_run(deployment)
    files = files_of(run)
    return files, {name: error_of(f, "customers", deployment.remote.remote) for name, f in files.items()
                   if f["status"] == "failed"}


# ── 16, 12: files that are no usable OpenPGP data ────────────────────────────────────


def test_empty_non_pgp_and_unprotected_files_say_what_they_are(deployment: Deployment,
                                                               partner_keys: PartnerKeys) -> None:
    deployment.write_goal("customers", GOAL)
    deployment.put("in/customers_1_empty.csv.gpg", b"", mtime=OLD)
    deployment.put("in/customers_2_text.csv.gpg", rows("text"), mtime=OLD)
    put_encrypted_in(deployment, partner_keys, "customers_3_nomdc.csv.gpg", "--rfc2440")
    before = store_contents(deployment)
    _, causes = causes_of(deployment)
    assert causes == {
        "customers_1_empty.csv.gpg": ("the file is empty (0 bytes), not OpenPGP data: it is tried again on "
                                     "the next run"),
        "customers_2_text.csv.gpg": "not OpenPGP data: the name says encrypted, but the file holds something else "
                                    "(sent unencrypted, or under the wrong name?)",
        "customers_3_nomdc.csv.gpg": "the data has no integrity protection (no MDC, as `gpg --rfc2440` or a very old "
                                     "tool writes it), so it could have been altered unnoticed: refused; ask the "
                                     "sender to encrypt with integrity protection, the default of current tools",
    }
    assert store_contents(deployment) == before


# ── 11: passphrase-only (symmetric) files ────────────────────────────────────────────


def test_a_passphrase_only_file_names_the_setting_then_imports_with_it(deployment: Deployment,
                                                                       partner_keys: PartnerKeys) -> None:
    deployment.write_goal("customers", GOAL)
    put_symmetric(deployment, partner_keys, "customers_1_sym.csv.gpg")
    put_symmetric(deployment, partner_keys, "customers_2_sym_armored.csv.asc", "--armor")
    _, causes = causes_of(deployment)
    said = ("the file is encrypted with a passphrase only (symmetric), not to the connector's key: set "
            "pgp.decrypt.symmetric_passphrase (or symmetric_passphrase_file) to the passphrase the partner used")
    assert causes == {"customers_1_sym.csv.gpg": said, "customers_2_sym_armored.csv.asc": said}

    deployment.update_connector(decrypt_settings(deployment, symmetric_passphrase="wrong-pass"))
    _, causes = causes_of(deployment)
    assert set(causes.values()) == {"wrong pgp.decrypt.symmetric_passphrase for this passphrase-encrypted file"}

    secret = deployment.dir / "keys" / "symmetric.pass"
    secret.write_text(SYMMETRIC + "\n")
    secret.chmod(0o600)
    deployment.update_connector(decrypt_settings(deployment, symmetric_passphrase_file="keys/symmetric.pass"))
    files, causes = causes_of(deployment)
    assert causes == {}
    assert {f["status"] for f in files.values()} == {"imported"}
    assert sorted(p["email"][0] for p in deployment.properties()) == [
        "customers_1_sym@example.test", "customers_2_sym_armored@example.test"]


# ── 10: signatures by expired or revoked keys ────────────────────────────────────────


def test_a_signature_by_an_expired_or_revoked_key_says_so_and_when(deployment: Deployment,
                                                                   partner_keys: PartnerKeys) -> None:
    deployment.write_goal("customers", GOAL)
    subkey = next(r[4] for r in colons(partner_keys.home, partner_keys.revoked_fpr) if r[0] == "sub")
    old = partner_keys.old_connector_fpr
    put_encrypted_in(deployment, partner_keys, "customers_1_expired.csv.gpg", "--faked-system-time",
                     "20240201T000000", "--sign", "--local-user", partner_keys.expired_fpr, to=old)
    put_encrypted_in(deployment, partner_keys, "customers_2_revoked.csv.gpg", "--sign", "--local-user", f"{subkey}!",
                     to=old)
    revoke_signing_subkey(partner_keys)  # after signing: the partner's key was revoked since
    for name in ("expired", "revoked"):
        shutil.copy(getattr(partner_keys, f"{name}_public"), deployment.dir / "keys" / f"{name}.asc")
    (deployment.dir / "keys" / "old.private.asc").write_bytes(partner_keys.old_connector_private.read_bytes())
    (deployment.dir / "keys" / "old.private.asc").chmod(0o600)
    deployment.update_connector(decrypt_settings(
        deployment, private_key="keys/old.private.asc", verify_keys=["keys/expired.asc", "keys/revoked.asc"],
        require_signature_from=[partner_keys.expired_fpr, partner_keys.revoked_fpr]))
    _, causes = causes_of(deployment)
    assert causes["customers_1_expired.csv.gpg"] == (
        f"signed by {partner_keys.expired_fpr}, whose key expired on 2024-06-01: ask the partner for its renewed "
        "public key and put it in pgp.decrypt.verify_keys")
    revoked = causes["customers_2_revoked.csv.gpg"]
    assert revoked.startswith(f"signed by {partner_keys.revoked_fpr} (subkey {subkey}), revoked on 20"), revoked
    assert revoked.endswith("(key is no longer used: retired): the partner must sign with a valid key"), revoked


# ── 17: child processes get no secret ────────────────────────────────────────────────


def test_gpg_and_its_agent_get_a_scrubbed_environment(deployment: Deployment, partner_keys: PartnerKeys,
                                                      tmp_path: Path) -> None:
    # gpg is found on PATH, gpg-agent through the home's gpg.conf: both through wrappers that note their
    # environment and run the real program.
    deployment.write_goal("customers", GOAL)
    put_encrypted_in(deployment, partner_keys, "customers_1.csv.gpg")
    seen = tmp_path / "environments"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("gpg", "gpg-agent"):
        real = shutil.which(program) or f"/usr/bin/{program}"
        wrapper = bin_dir / program
        wrapper.write_text(f"#!/bin/sh\nenv >> {seen}\necho '-- {program}' >> {seen}\nexec {real} \"$@\"\n")
        wrapper.chmod(stat.S_IRWXU)
    home = Path(str(deployment.config().connector.pgp.gnupg_home))
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "gpg.conf").write_text(f"agent-program {bin_dir / 'gpg-agent'}\n")
    secrets = {"SFTP_PASSWORD": "sftp-Secret-1", "PGP_PASSPHRASE": "pgp-Secret-2", "SMTP_PASSWORD": "smtp-Secret-3",
               "WEBHOOK_TOKEN": "hook-Secret-4", "TEST_PGP_PASSPHRASE": deployment.keys.passphrase}
    env = {**os.environ, **secrets, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done, run = cli_run(deployment, env=env)
    assert run["status"] == "success", done.stderr
    recorded = seen.read_text()
    assert "-- gpg\n" in recorded and "-- gpg-agent\n" in recorded  # both ran through their wrappers
    names = {line.split("=", 1)[0] for line in recorded.splitlines() if "=" in line}
    assert not names & secrets.keys()
    assert not [value for value in secrets.values() if value in recorded]
    assert names <= {"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LC_ALL", "LANGUAGE", "PWD", "SHLVL",
                     "GNUPGHOME", "_"}, names  # the shell of the wrapper adds PWD, SHLVL and _
