"""`sftp-connector init`: the deployment it writes validates against the real sshd, imports and exports."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.connector import ROOT
from tests.fixtures.gpg import PgpKeys, gpg
from tests.fixtures.sshd import SshServer

CSV = "customer_id,email,first_name,phone,interests,points,newsletter,household\nC1,a@x.com,Ada,,books,10,yes,\n"


def _cli(*args: str, cwd: Path, answer: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sftp_connector", *args], input=answer, capture_output=True,
                          text=True, timeout=120, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def server_home(sshd: SshServer) -> Iterator[Path]:
    """The test user's login directory, with the partner's folders; emptied of them after."""
    home = sshd.users["sftpc-key"].home
    yield home
    for folder in ("in", "out"):
        shutil.rmtree(home / folder, ignore_errors=True)


@pytest.fixture
def authorized(sshd: SshServer) -> Iterator[Path]:
    """The test user's authorized_keys, restored after the test."""
    path = sshd.known_hosts.parent / "authorized_keys" / "sftpc-key"
    before = path.read_text()
    yield path
    path.write_text(before)


def test_init_writes_a_deployment_that_validates_imports_and_exports(
    tmp_path: Path, sshd: SshServer, pgp_keys: PgpKeys, server_home: Path, authorized: Path
) -> None:
    base = tmp_path / "acme"
    server = ["--host", sshd.host, "--port", str(sshd.port), "--user", "sftpc-key"]
    asked = _cli("init", str(base), *server, cwd=tmp_path, answer="n\n")
    assert asked.returncode == 2
    assert f"offers the host key ssh-ed25519 {sshd.fingerprint}" in asked.stdout
    assert "host key not confirmed: nothing written" in asked.stderr
    assert not (base / "connector.yaml").exists()
    wrong = _cli("init", str(base), *server, "--accept-host-key", "SHA256:" + "A" * 43, cwd=tmp_path)
    assert wrong.returncode == 2 and "nothing written" in wrong.stderr

    done = _cli("init", str(base), *server, "--accept-host-key", sshd.fingerprint, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for secret in ("keys/id_ed25519", "keys/connector.private.asc", "keys/pgp_passphrase"):
        assert stat.S_IMODE((base / secret).stat().st_mode) == 0o600, secret
    assert stat.S_IMODE((base / "keys").stat().st_mode) == 0o700
    public_ssh = (base / "keys" / "id_ed25519.pub").read_text().strip()
    assert public_ssh in done.stdout
    assert "-----BEGIN PGP PUBLIC KEY BLOCK-----" in done.stdout
    assert (base / "keys" / "known_hosts").read_text() == sshd.known_hosts.read_text()
    passphrase = (base / "keys" / "pgp_passphrase").read_text().strip()
    assert passphrase not in done.stdout + done.stderr
    config = yaml.safe_load((base / "connector.yaml").read_text())
    assert set(config) >= {"sftp", "pgp", "store", "schedule", "notifications", "privacy", "labels", "segments"}
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (base / "goals").glob("*.yaml")}
    assert kinds == {"import-profiles", "import-groups", "export-profiles"}
    again = _cli("init", str(base), cwd=tmp_path)
    assert again.returncode == 2 and "never overwrites" in again.stderr

    # The server's owner authorizes the key; the partner makes its folders and drops a file for the new key.
    authorized.write_text(authorized.read_text() + public_ssh + "\n")
    user = sshd.users["sftpc-key"]
    for folder in ("in/customers", "in/households", "in/orders"):
        user.mkdir(folder)
    gpg(pgp_keys.sender_home, "--import", str(base / "keys" / "connector.public.asc"))
    fingerprint = re.search(r"OpenPGP public key \(([0-9A-F]{40})\)", done.stdout).group(1)  # type: ignore[union-attr]
    plain, sealed = tmp_path / "c.csv", tmp_path / "c.csv.gpg"
    plain.write_text(CSV)
    pgp_keys.gpg_encrypt(plain, sealed, recipient_fpr=fingerprint)
    user.put("in/customers/customers_1.csv.gpg", sealed.read_bytes(), mtime=0)

    checked = _cli("--config", str(base / "connector.yaml"), "validate", "--connect", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "customers_*.csv.gpg now" in checked.stdout
    ran = _cli("--config", str(base / "connector.yaml"), "--log-format", "plain", "run", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    dumped = _cli("--config", str(base / "connector.yaml"), "profiles", "dump", cwd=tmp_path)
    assert '"email":["a@x.com"]' in dumped.stdout.replace(" ", "")
    assert (server_home / "in/customers/archive/customers_1.csv.gpg").exists()
    assert [p.name.startswith("newsletter_") for p in (server_home / "out/newsletter").iterdir()] == [True]
