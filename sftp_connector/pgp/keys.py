"""The connector's own GnuPG home and the keys in it.

`open_keyring` prepares the home (0700, a no-cache gpg-agent.conf, an agent socket path gpg-agent
can bind) and imports the configured keys; `import_keys`, `list_keys` and `stop_agent` serve the
`keys` commands. Decryption and encryption live in `pgp/__init__.py`, which takes its `Keyring`,
`Gpg` handle, recipient fingerprints and gpg's complaints (`gpg_says`) from here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gnupg

from sftp_connector import errors
from sftp_connector.config import models
from sftp_connector.private import private_dir, private_file

logger = logging.getLogger(__name__)

AGENT_CONF = """\
# Written by sftp-connector: never cache a passphrase, so a wrong one always fails.
default-cache-ttl 0
max-cache-ttl 0
allow-loopback-pinentry
# The private key's copy in this home is derived from the passphrase on every decryption: at gpg's
# calibrated cost that is half a second of CPU per file. The key stays protected by its passphrase.
s2k-count 1048576
"""
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, NUL included
_PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "SYSTEMROOT")
"""What gpg (and the gpg-agent it starts, which inherits it) gets of our environment: where programs and
temp files are, whose they are. Nothing else: the connector's environment holds its secrets (SFTP_PASSWORD,
a passphrase variable, tokens), and GnuPG's own variables (GNUPGHOME) would point it at the user's home."""
_FINGERPRINT = re.compile(r"(?:0x)?([0-9A-F]{16}|[0-9A-F]{40}|[0-9A-F]{64})")
_ALGORITHMS = {"1": "rsa", "16": "elgamal", "17": "dsa", "18": "ecdh", "19": "ecdsa", "22": "eddsa"}


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key in the connector's keyring."""

    fingerprint: str
    uids: tuple[str, ...]
    secret: bool
    expires: str | None
    """ISO 8601 UTC expiry, or None for a key that never expires."""
    algorithm: str
    """The primary key's algorithm, e.g. rsa3072 or ed25519."""


class Gpg(gnupg.GPG):
    """python-gnupg that remembers its last gpg process, so `decrypt` can stop a bomb."""

    process: subprocess.Popen[bytes] | None = None
    buffer_size = 1 << 20  # bytes per pipe read or write: its threads then rarely need the GIL (default 16 KiB)

    def _open_subprocess(self, args: list[str], passphrase: bool = False) -> Any:
        self.process = super()._open_subprocess(args, passphrase)
        return self.process


@dataclass(slots=True)
class Keyring:
    """The connector's own GnuPG home, never ~/.gnupg, and the gpg handle on it."""

    home: Path
    gpg: Gpg
    own_key: str | None = None
    """Fingerprint of the connector's private key (pgp.decrypt.private_key): it signs exports."""
    lock: threading.RLock = field(default_factory=threading.RLock)


def open_keyring(config: models.Pgp, default_home: Path) -> Keyring:
    """Given the pgp: config, return its keyring with the configured keys imported.

    Raise ConfigError if a key file is missing or the home unusable, CryptoError if a file holds no key.
    """
    home = Path(config.gnupg_home or default_home)
    _prepare_home(home)
    keyring = Keyring(home=home, gpg=_new_gpg(home))
    if config.decrypt.private_key is not None:
        keyring.own_key = _import_private_key(keyring, config.decrypt.private_key)
    for path in config.decrypt.verify_keys:
        import_keys(keyring, path)
    for recipient in config.encrypt.recipients:
        if bare_fingerprint(recipient) is None:
            import_keys(keyring, Path(recipient))
    logger.debug("keyring %s ready (own key %s)", home, keyring.own_key)
    return keyring


def stop_agent(keyring: Keyring | Path) -> None:
    """Given a keyring (or its home), stop the gpg-agent serving its home (a new one starts when needed)."""
    _gpgconf(keyring if isinstance(keyring, Path) else keyring.home, "--kill", "gpg-agent")


def import_keys(keyring: Keyring, path: Path) -> list[str]:
    """Given a key file, import its keys (again is harmless) and return their fingerprints.

    Raise ConfigError if the file is missing, CryptoError if it holds no key.
    """
    if not path.is_file():
        raise errors.ConfigError(f"key file {path} not found")
    with keyring.lock:
        result = keyring.gpg.import_keys(path.read_bytes())
    fingerprints = list(dict.fromkeys(result.fingerprints))
    if not fingerprints:
        reason = gpg_says(result) or "no OpenPGP key found"
        raise errors.CryptoError(f"key file {path} holds no usable OpenPGP key ({reason})", file=str(path))
    logger.debug("imported %s from %s", ", ".join(fingerprints), path)
    return fingerprints


def list_keys(keyring: Keyring) -> list[KeyInfo]:
    """Given a keyring, return its keys, public and secret."""
    with keyring.lock:
        secret = {key["fingerprint"] for key in keyring.gpg.list_keys(secret=True)}
        public = keyring.gpg.list_keys()
    return [KeyInfo(fingerprint=key["fingerprint"], uids=tuple(_utf8(uid) for uid in key["uids"]),
                    secret=key["fingerprint"] in secret, expires=_iso_date(key.get("expires")),
                    algorithm=key.get("curve") or f"{_ALGORITHMS.get(key['algo'], key['algo'])}{key['length']}")
            for key in public]


KEY_ALGORITHMS = {"ed25519": ("ed25519", "cv25519"), "rsa3072": ("rsa3072", "rsa3072")}
"""The connector's own key: (primary for signing, subkey for encryption). ed25519 is gpg's default and fast
to decrypt; rsa3072 for partners whose OpenPGP tools lack Curve25519."""


def generate_key(uid: str, passphrase: str, private_out: Path, public_out: Path, algorithm: str = "ed25519") -> str:
    """Given a user id, a passphrase and two files, make a new OpenPGP key (signing primary, encryption
    subkey, no expiry) in a throwaway GnuPG home; write the private key (protected by the passphrase, 0600)
    and the public key, both armored; return the fingerprint. Raise CryptoError if gpg fails."""
    primary, subkey = KEY_ALGORITHMS[algorithm]
    home = Path(tempfile.mkdtemp(prefix="sftpc-g", dir="/tmp"))  # short: gpg-agent's socket lives in it
    try:
        _gpg_with_passphrase(home, passphrase, "--quick-gen-key", uid, primary, "cert,sign", "never")
        fingerprint = next(r[9] for r in _colons(home, "--list-secret-keys") if r[0] == "fpr")
        _gpg_with_passphrase(home, passphrase, "--quick-add-key", fingerprint, subkey, "encr", "never")
        public = _gpg_with_passphrase(home, passphrase, "--armor", "--export", fingerprint)
        secret = _gpg_with_passphrase(home, passphrase, "--armor", "--export-secret-keys", fingerprint)
    finally:
        _gpgconf(home, "--kill", "gpg-agent")
        shutil.rmtree(home, ignore_errors=True)
    with private_file(private_out).open("w", encoding="ascii") as out:
        out.write(secret)
    public_out.write_text(public, encoding="ascii")
    return fingerprint


def _gpg_with_passphrase(home: Path, passphrase: str, *args: str) -> str:
    """Run gpg in a throwaway home with the passphrase on its stdin (never its arguments); return its output."""
    done = subprocess.run([shutil.which("gpg") or "gpg", "--homedir", str(home), "--batch", "--no-tty",
                           "--pinentry-mode", "loopback", "--passphrase-fd", "0", *args],
                          input=passphrase + "\n", env=_environment(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise errors.CryptoError(f"gpg {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _colons(home: Path, *args: str) -> list[list[str]]:
    """Given a GnuPG home and gpg listing arguments, return its --with-colons records (empty if gpg fails)."""
    done = subprocess.run([shutil.which("gpg") or "gpg", "--homedir", str(home), "--batch", "--with-colons",
                           "--fixed-list-mode", *args], env=_environment(), capture_output=True, text=True,
                          check=False)
    return [line.split(":") for line in done.stdout.splitlines()]


# ── home and gpg process ──────────────────────────────────────────────────────────────


def _prepare_home(home: Path) -> None:
    """Given the GnuPG home, create it 0700 with a no-cache agent config. Raise ConfigError if impossible."""
    try:
        private_dir(home, own=True)
        conf = home / "gpg-agent.conf"
        rewritten = not conf.is_file() or conf.read_text() != AGENT_CONF
        if rewritten:
            conf.write_text(AGENT_CONF)
    except OSError as exc:
        raise errors.ConfigError(f"pgp.gnupg_home {home}: {exc.strerror}") from exc
    if rewritten:  # a running agent would keep caching under its old config
        _gpgconf(home, "--kill", "gpg-agent")
        # The home's private keys were protected under the old config's cost: they are imported again from
        # pgp.decrypt.private_key (a copy of it, as every start does), now under this one.
        shutil.rmtree(home / "private-keys-v1.d", ignore_errors=True)
    _check_socket_path(home)


def _check_socket_path(home: Path) -> None:
    """Given the GnuPG home, make sure gpg-agent can bind its socket. Raise ConfigError if the path is too long."""
    if len(os.fsencode(_gpgconf(home, "--list-dirs", "agent-socket"))) <= _MAX_SOCKET_PATH:
        return
    _gpgconf(home, "--create-socketdir")
    socket = _gpgconf(home, "--list-dirs", "agent-socket")
    if len(os.fsencode(socket)) > _MAX_SOCKET_PATH:
        raise errors.ConfigError(
            f"pgp.gnupg_home {home}: the path is too long for gpg-agent's socket ({socket}); "
            f"use a shorter gnupg_home or provide /run/user/{os.getuid()} for the connector's user")


def _gpgconf(home: Path, *args: str) -> str:
    """Given a home and gpgconf arguments, return gpgconf's output. Raise ConfigError if gpgconf is missing."""
    binary = shutil.which("gpgconf")
    if binary is None:
        raise errors.ConfigError("gpgconf not found: install GnuPG 2.2 or later")
    done = subprocess.run([binary, "--homedir", str(home), *args], env=_environment(), capture_output=True,
                          text=True, check=False)
    return done.stdout.strip()


def _new_gpg(home: Path) -> Gpg:
    """Given a prepared home, return a python-gnupg handle on it. Raise ConfigError if gpg is missing."""
    binary = shutil.which("gpg") or "gpg"
    options = ["--pinentry-mode", "loopback", "--no-auto-key-retrieve", "--no-auto-key-locate"]
    try:
        gpg = Gpg(gpgbinary=binary, gnupghome=str(home), env=_environment(), options=options)
    except (OSError, ValueError) as exc:
        raise errors.ConfigError(f"cannot run gpg ({binary}): install GnuPG 2.2 or later") from exc
    gpg.buffer_size = 1 << 16
    return gpg


def _environment() -> dict[str, str]:
    """Return gpg's environment: the few variables of ours it needs (never a secret), in the C locale so its
    messages are stable."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env.update(LC_ALL="C", LANGUAGE="C")
    return env


# ── keys ─────────────────────────────────────────────────────────────────────────────


def _import_private_key(keyring: Keyring, path: Path) -> str:
    """Given the connector's private key file, import it and return its fingerprint. Raise CryptoError if public."""
    imported = import_keys(keyring, path)
    with keyring.lock:
        secret = {key["fingerprint"] for key in keyring.gpg.list_keys(secret=True)}
    for fingerprint in imported:
        if fingerprint in secret:
            return fingerprint
    raise errors.CryptoError(f"pgp.decrypt.private_key {path} holds no private key "
                             "(export one with gpg --export-secret-keys)", file=str(path))


def recipient_fingerprints(keyring: Keyring, recipient: str) -> list[str]:
    """Given a recipient as a fingerprint or key file, return the fingerprints to encrypt to."""
    fingerprint = bare_fingerprint(recipient)
    return [fingerprint] if fingerprint else import_keys(keyring, Path(recipient))


def bare_fingerprint(value: str) -> str | None:
    """Given a recipient or signer as configured, return it as a bare fingerprint, or None for a path."""
    match = _FINGERPRINT.fullmatch(value.replace(" ", "").upper())
    return match.group(1) if match else None


_REVOCATION_REASONS = {"00": "no reason given", "01": "key is superseded", "02": "key has been compromised",
                       "03": "key is no longer used"}


def revocation(keyring: Keyring, key_id: str) -> str:
    """Given the id of a revoked key or subkey, return "revoked on <day> (<reason>[: <comment>])" from its
    revocation signature in the keyring, or "revoked" if the keyring does not say more."""
    with keyring.lock:
        listing = _gpg_colons(keyring, "--list-sigs", key_id)
    seen = False
    for record in listing:
        if record[0] in ("pub", "sub"):
            seen = record[4].endswith(key_id.upper()[-16:])
        elif record[0] == "rev" and seen:
            reason = _REVOCATION_REASONS.get(record[10].partition(",")[2], "no reason given")
            comment = record[20] if len(record) > 20 and record[20] else ""
            return f"revoked on {iso_day(record[5])} ({reason}{': ' + comment if comment else ''})"
    return "revoked"


def iso_day(epoch: str) -> str:
    """Given epoch seconds as gpg prints them, return the UTC day (2024-06-01)."""
    return datetime.fromtimestamp(int(epoch), UTC).date().isoformat()


def _gpg_colons(keyring: Keyring, *args: str) -> list[list[str]]:
    """Given gpg listing arguments, return its --with-colons records of the keyring (empty if gpg fails)."""
    return _colons(keyring.home, *args)


def _iso_date(epoch: str | None) -> str | None:
    """Given an epoch-seconds field from a key listing, return it as ISO 8601 UTC, or None."""
    return datetime.fromtimestamp(int(epoch), UTC).isoformat() if epoch else None


def _utf8(text: str) -> str:
    """Given a uid python-gnupg decoded as Latin-1, return it decoded as the UTF-8 gpg wrote."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def gpg_says(result: Any) -> str:
    """Given a python-gnupg result, return gpg's last human-readable complaint, or ""."""
    said = [line[5:] for line in (getattr(result, "stderr", None) or "").splitlines()
            if line.startswith("gpg: ") and "WARNING: " not in line]
    return said[-1].strip() if said else ""
