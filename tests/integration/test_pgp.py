"""pgp.py against the real gpg binary, with files made by the gpg command line as a partner would."""

from __future__ import annotations

import gzip
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from sftp_connector import errors, pgp
from sftp_connector.config import models
from tests.fixtures.gpg import PgpKeys, gpg, short_home

CSV = b"email,points\nann@example.test,10\nbob@example.test,20\n"


def pgp_config(keys: PgpKeys, home: Path | None, **decrypt: object) -> models.Pgp:
    """Given the session keys, return a pgp: config that imports them into home."""
    return models.Pgp(
        gnupg_home=home,
        decrypt=models.PgpDecrypt(private_key=keys.connector_private, passphrase=SecretStr(keys.passphrase),
                                  verify_keys=[keys.partner_public], **decrypt),
        encrypt=models.PgpEncrypt(recipients=[str(keys.partner_public)]),
    )


@pytest.fixture(scope="module")
def keyring(pgp_keys: PgpKeys) -> Iterator[pgp.Keyring]:
    parent = short_home()
    keyring = pgp.open_keyring(pgp_config(pgp_keys, parent / "gnupg"), parent / "unused")
    yield keyring
    pgp.stop_agent(keyring)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    path.write_bytes(CSV)
    return path


def encrypted(keys: PgpKeys, plain: Path, **options: object) -> Path:
    """Given a plaintext file, return it encrypted by the partner to the connector (options as gpg_encrypt)."""
    options.setdefault("recipient_fpr", keys.connector_fpr)
    return keys.gpg_encrypt(plain, plain.with_name(plain.name + ".gpg"), **options)  # type: ignore[arg-type]


def decrypt(keyring: pgp.Keyring, keys: PgpKeys, src: Path, **options: object) -> tuple[pgp.Decrypted, Path]:
    options.setdefault("passphrase", keys.passphrase)
    dst = src.with_name("out.csv")
    return pgp.decrypt(keyring, src, dst, **options), dst  # type: ignore[arg-type]


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


# ── decrypt ─────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("compress", [6, 0], ids=["z6", "z0"])
def test_decrypts_what_a_partner_encrypted(keyring, pgp_keys, plain, armor, compress):
    result, dst = decrypt(keyring, pgp_keys, encrypted(pgp_keys, plain, armor=armor, compress=compress))
    assert dst.read_bytes() == CSV
    assert result == pgp.Decrypted(signer=None, signed=False, signer_key_id=None)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    assert leftovers(dst.parent) == []


def test_records_the_partners_signature(keyring, pgp_keys, plain):
    src = encrypted(pgp_keys, plain, sign_with=pgp_keys.partner_fpr)
    result, dst = decrypt(keyring, pgp_keys, src, require_signers=[pgp_keys.partner_fpr])
    assert result == pgp.Decrypted(signer=pgp_keys.partner_fpr, signed=True, signer_key_id=None)
    assert dst.read_bytes() == CSV


def test_a_strangers_signature_still_decrypts_when_none_is_required(keyring, pgp_keys, plain):
    result, dst = decrypt(keyring, pgp_keys, encrypted(pgp_keys, plain, sign_with=pgp_keys.stranger_fpr))
    assert result == pgp.Decrypted(signer=None, signed=True, signer_key_id=pgp_keys.stranger_fpr[-16:])
    assert dst.read_bytes() == CSV


@pytest.mark.parametrize(
    ("signer", "message"),
    [(None, "but the file is unsigned"), ("stranger", "not by one of")],
    ids=["unsigned", "wrong-signer"],
)
def test_refuses_a_file_not_signed_by_a_required_key(keyring, pgp_keys, plain, signer, message):
    sign_with = pgp_keys.stranger_fpr if signer else None
    src = encrypted(pgp_keys, plain, sign_with=sign_with)
    with pytest.raises(errors.CryptoError, match=message) as caught:
        decrypt(keyring, pgp_keys, src, require_signers=[pgp_keys.partner_fpr])
    assert pgp_keys.partner_fpr in str(caught.value)
    assert not (plain.parent / "out.csv").exists()
    assert leftovers(plain.parent) == []


def test_refuses_a_bad_signature(keyring, pgp_keys, plain):
    signed = plain.with_name("signed.pgp")
    gpg(pgp_keys.sender_home, "-z", "0", "--sign", "--local-user", pgp_keys.partner_fpr,
        "--output", str(signed), str(plain))
    tampered = signed.read_bytes().replace(b"ann@", b"eve@")
    signed.write_bytes(tampered)
    src = plain.with_name("tampered.gpg")  # encrypt the signed packets themselves, as an attacker could
    gpg(pgp_keys.sender_home, "--trust-model", "always", "--no-literal", "--encrypt",
        "--recipient", pgp_keys.connector_fpr, "--output", str(src), str(signed))
    with pytest.raises(errors.CryptoError, match="bad signature"):
        decrypt(keyring, pgp_keys, src)
    assert not (plain.parent / "out.csv").exists()


def test_a_wrong_passphrase_fails_even_right_after_the_right_one(keyring, pgp_keys, plain):
    src = encrypted(pgp_keys, plain)
    decrypt(keyring, pgp_keys, src)
    with pytest.raises(errors.CryptoError, match="wrong passphrase for the connector's private key") as caught:
        decrypt(keyring, pgp_keys, src, passphrase="not the passphrase")
    assert "not the passphrase" not in str(caught.value)
    with pytest.raises(errors.CryptoError, match="needs a passphrase"):
        decrypt(keyring, pgp_keys, src, passphrase=None)


def test_a_file_for_another_key_names_that_key(keyring, pgp_keys, plain):
    src = encrypted(pgp_keys, plain, recipient_fpr=pgp_keys.other_fpr)
    with pytest.raises(errors.CryptoError) as caught:
        decrypt(keyring, pgp_keys, src)
    assert str(caught.value).startswith(
        f"file {src}: no secret key for this file: it is encrypted to key {pgp_keys.other_encryption_keyid}")
    assert "import the matching private key" in str(caught.value)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "plain-csv"])
def test_corrupt_data_is_refused(keyring, pgp_keys, plain, damage):
    src = encrypted(pgp_keys, plain, compress=0)
    data = bytearray(src.read_bytes())
    if damage == "truncated":
        data = data[: len(data) - 20]
    elif damage == "flipped":
        data[-30] ^= 0xFF
    else:
        data = bytearray(CSV)
    src.write_bytes(bytes(data))
    said = "not OpenPGP data: the name says encrypted" if damage == "plain-csv" else "corrupt or truncated OpenPGP data"
    with pytest.raises(errors.CryptoError, match=said):
        decrypt(keyring, pgp_keys, src)
    assert not (plain.parent / "out.csv").exists()
    assert leftovers(plain.parent) == []


def test_a_compression_bomb_stops_at_max_bytes(keyring, pgp_keys, tmp_path):
    big = tmp_path / "zeros.csv"
    with big.open("wb") as file:
        for _ in range(64):
            file.write(bytes(1 << 20))
    src = pgp_keys.gpg_encrypt(big, tmp_path / "bomb.gpg", recipient_fpr=pgp_keys.connector_fpr, compress=9)
    big.unlink()
    (tmp_path / "out.csv").write_bytes(b"stale")
    started = time.monotonic()
    with pytest.raises(errors.InputError, match=r"decrypted size exceeds max_file_bytes \(100000\)"):
        decrypt(keyring, pgp_keys, src, max_bytes=100_000)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out.csv").exists()
    assert leftovers(tmp_path) == []


def test_max_bytes_lets_a_file_of_that_size_through(keyring, pgp_keys, plain):
    _, dst = decrypt(keyring, pgp_keys, encrypted(pgp_keys, plain), max_bytes=len(CSV))
    assert dst.read_bytes() == CSV


def big_plaintext(path: Path, megabytes: int) -> bytes:
    """Write a CSV of about megabytes MiB that gpg cannot compress much; return its bytes."""
    rows = [f"{i:08d}@example.test,{(i * 2654435761) % 4294967296:010d}\n".encode() for i in range(megabytes * 35_000)]
    data = b"email,points\n" + b"".join(rows)
    path.write_bytes(data)
    return data


def test_a_decryption_is_read_while_gpg_writes_it(keyring, pgp_keys, tmp_path):
    data = big_plaintext(tmp_path / "big.csv", 24)
    src = encrypted(pgp_keys, tmp_path / "big.csv", compress=0, sign_with=pgp_keys.partner_fpr)
    decryption = pgp.Decryption(keyring, src, tmp_path / "out.csv", passphrase=pgp_keys.passphrase)
    with decryption.open() as file:
        first = file.read(1)
        gpg_process = keyring.gpg.process
        assert gpg_process is not None and gpg_process.poll() is None, "gpg had finished before the first read"
        rest = file.read()
        assert file.read() == b""
    assert first + rest == data
    assert decryption.wait().signer == pgp_keys.partner_fpr
    assert (tmp_path / "out.csv").read_bytes() == data
    with decryption.open() as again:  # done: the renamed file
        assert again.read(12) == b"email,points"


def test_a_reader_of_a_failing_decryption_sees_an_end_and_wait_raises(keyring, pgp_keys, tmp_path):
    big_plaintext(tmp_path / "big.csv", 8)
    src = encrypted(pgp_keys, tmp_path / "big.csv", compress=0)
    data = bytearray(src.read_bytes())
    data[-30] ^= 0xFF  # gpg writes the plaintext, then finds the integrity check broken
    src.write_bytes(bytes(data))
    decryption = pgp.Decryption(keyring, src, tmp_path / "out.csv", passphrase=pgp_keys.passphrase)
    with decryption.open() as file:
        seen = file.read()
    assert seen.startswith(b"email,points\n")
    with pytest.raises(errors.CryptoError, match="corrupt or truncated OpenPGP data"):
        decryption.wait()
    assert not (tmp_path / "out.csv").exists()
    assert leftovers(tmp_path) == []
    with pytest.raises(errors.CryptoError, match="corrupt or truncated OpenPGP data"):
        decryption.open()  # its plaintext is gone: opening says why


def test_a_stopped_decryption_ends_at_once_and_keeps_nothing(keyring, pgp_keys, tmp_path):
    big_plaintext(tmp_path / "big.csv", 24)
    src = encrypted(pgp_keys, tmp_path / "big.csv", compress=0)
    decryption = pgp.Decryption(keyring, src, tmp_path / "out.csv", passphrase=pgp_keys.passphrase)
    with decryption.open() as file:
        assert file.read(1) == b"e"
        decryption.stop()
        file.read()  # ends: gpg is gone
    with pytest.raises(errors.CryptoError, match="decryption stopped"):
        decryption.wait()
    assert not (tmp_path / "out.csv").exists()
    assert leftovers(tmp_path) == []


def test_a_signed_but_unencrypted_file_is_refused(keyring, pgp_keys, plain):
    src = plain.with_name("signed.csv.gpg")
    gpg(pgp_keys.sender_home, "--sign", "--local-user", pgp_keys.partner_fpr, "--output", str(src), str(plain))
    with pytest.raises(errors.CryptoError, match="not encrypted"):
        decrypt(keyring, pgp_keys, src)


# ── encrypt ─────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("recipient", ["key-file", "fingerprint"])
@pytest.mark.parametrize(("armor", "sign"), [(False, False), (True, True)], ids=["binary", "armored-signed"])
def test_the_partner_decrypts_an_export(keyring, pgp_keys, plain, recipient, armor, sign):
    to = str(pgp_keys.partner_public) if recipient == "key-file" else pgp_keys.partner_fpr
    dst = plain.with_name("export.csv.gpg")
    pgp.encrypt(keyring, plain, dst, recipients=[to], sign=sign, armor=armor, passphrase=pgp_keys.passphrase)
    assert dst.read_bytes().startswith(b"-----BEGIN PGP MESSAGE-----") == armor
    assert pgp.looks_encrypted(dst)
    signer = pgp_keys.gpg_decrypt_as_partner(dst, plain.with_name("back.csv"))
    assert plain.with_name("back.csv").read_bytes() == CSV
    assert signer == (pgp_keys.connector_fpr if sign else None)
    assert leftovers(plain.parent) == []


def test_encrypting_to_an_unknown_key_names_the_recipient(keyring, plain):
    unknown = "0123456789ABCDEF0123456789ABCDEF01234567"
    with pytest.raises(errors.CryptoError, match=f"no public key for recipient {unknown}"):
        pgp.encrypt(keyring, plain, plain.with_name("x.gpg"), recipients=[unknown])
    assert not plain.with_name("x.gpg").exists()
    assert leftovers(plain.parent) == []


def test_signing_with_a_wrong_passphrase_fails(keyring, plain):
    with pytest.raises(errors.CryptoError, match="cannot sign"):
        pgp.encrypt(keyring, plain, plain.with_name("x.gpg"), recipients=[keyring.own_key or ""],
                    sign=True, passphrase="wrong")
    with pytest.raises(errors.CryptoError, match="needs a passphrase"):
        pgp.encrypt(keyring, plain, plain.with_name("x.gpg"), recipients=[keyring.own_key or ""], sign=True)
    assert not plain.with_name("x.gpg").exists()


# ── looks_encrypted ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("customers.csv", CSV, False),
        ("customers.csv", b"\xef\xbb\xbf" + CSV, False),
        ("customers.csv", "Ärger,Öl\n".encode("latin-1") + b"x" * 40, False),
        ("customers.csv.gz", gzip.compress(CSV), False),
        ("customers.csv", b"", False),
        ("customers.csv.gpg", CSV, True),
        ("customers.PGP", CSV, True),
        ("customers.csv", b"-----BEGIN PGP MESSAGE-----\n\nhQ", True),
    ],
)
def test_looks_encrypted_by_name_or_content(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert pgp.looks_encrypted(path) is expected


@pytest.mark.parametrize("options", [{}, {"compress": 0}, {"sign_with": "partner"}, {"armor": True}])
def test_looks_encrypted_sees_gpg_output_without_a_suffix(pgp_keys, plain, options):
    if "sign_with" in options:
        options = {"sign_with": pgp_keys.partner_fpr}
    src = encrypted(pgp_keys, plain, **options)
    bare = src.rename(plain.with_name("customers_bare.csv"))
    assert pgp.looks_encrypted(bare)


def test_looks_encrypted_sees_signed_and_compressed_packets(pgp_keys, plain):
    for args in (["-z", "6", "--sign"], ["-z", "0", "--sign"], ["--store"]):
        dst = plain.with_name("packets.csv")
        gpg(pgp_keys.sender_home, *args, "--local-user", pgp_keys.partner_fpr, "--output", str(dst), str(plain))
        assert pgp.looks_encrypted(dst), args


# ── keys and home ───────────────────────────────────────────────────────────────────


def test_list_keys(keyring, pgp_keys):
    keys = {key.fingerprint: key for key in pgp.list_keys(keyring)}
    assert set(keys) == {pgp_keys.connector_fpr, pgp_keys.partner_fpr}
    connector, partner = keys[pgp_keys.connector_fpr], keys[pgp_keys.partner_fpr]
    assert (connector.secret, connector.algorithm, connector.expires) == (True, "rsa3072", None)
    assert connector.uids == ("sftp-connector test <connector@example.test>",)
    assert (partner.secret, partner.algorithm) == (False, "ed25519")
    assert keyring.own_key == pgp_keys.connector_fpr


def test_import_keys_is_idempotent(keyring, pgp_keys):
    before = pgp.list_keys(keyring)
    assert pgp.import_keys(keyring, pgp_keys.partner_public) == [pgp_keys.partner_fpr]
    assert pgp.import_keys(keyring, pgp_keys.connector_private) == [pgp_keys.connector_fpr]
    assert pgp.list_keys(keyring) == before


def test_import_refuses_missing_and_keyless_files(keyring, plain):
    with pytest.raises(errors.ConfigError, match="not found"):
        pgp.import_keys(keyring, plain.with_name("missing.asc"))
    with pytest.raises(errors.CryptoError, match="holds no usable OpenPGP key"):
        pgp.import_keys(keyring, plain)


def test_a_public_key_as_private_key_is_refused(pgp_keys, gnupg_home):
    config = models.Pgp(gnupg_home=gnupg_home, decrypt=models.PgpDecrypt(private_key=pgp_keys.partner_public))
    with pytest.raises(errors.CryptoError, match="holds no private key"):
        pgp.open_keyring(config, gnupg_home)


def test_own_home_0700_and_never_the_users(pgp_keys, plain, gnupg_home, monkeypatch, tmp_path):
    decoy = short_home()
    monkeypatch.setenv("GNUPGHOME", str(decoy))
    user_home = Path.home() / ".gnupg"
    existed = user_home.exists()
    try:
        keyring = pgp.open_keyring(pgp_config(pgp_keys, None), gnupg_home)
        pgp.open_keyring(pgp_config(pgp_keys, None), gnupg_home)  # a second start reuses the home
        result, _ = decrypt(keyring, pgp_keys, encrypted(pgp_keys, plain, sign_with=pgp_keys.partner_fpr))
        assert result.signer == pgp_keys.partner_fpr
        assert stat.S_IMODE(gnupg_home.stat().st_mode) == 0o700
        assert "max-cache-ttl 0" in (gnupg_home / "gpg-agent.conf").read_text()
        assert list(decoy.iterdir()) == []
        assert user_home.exists() == existed
    finally:
        shutil.rmtree(decoy, ignore_errors=True)


def test_a_home_too_deep_for_the_agent_socket_is_refused_or_works(pgp_keys, plain):
    parent = short_home()
    deep = parent.joinpath("d" * 60, "e" * 60)
    try:
        keyring = pgp.open_keyring(pgp_config(pgp_keys, deep), deep)
    except errors.ConfigError as exc:
        assert "too long for gpg-agent's socket" in str(exc)
    else:  # a /run/user/<uid> socket directory was available
        decrypt(keyring, pgp_keys, encrypted(pgp_keys, plain))
        pgp.stop_agent(keyring)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_a_home_of_an_older_release_gets_its_private_key_protected_at_the_new_cost(pgp_keys, plain, gnupg_home):
    # 0.3's agent config had no s2k-count: its copy of the key cost half a second of CPU per decryption.
    from sftp_connector.pgp.keys import AGENT_CONF

    old_conf = AGENT_CONF.split("# The private key's copy")[0]
    gnupg_home.mkdir(mode=0o700)
    (gnupg_home / "gpg-agent.conf").write_text(old_conf)
    keyring = pgp.open_keyring(pgp_config(pgp_keys, gnupg_home), gnupg_home)  # rewrites the conf, re-imports
    assert "s2k-count 1048576" in (gnupg_home / "gpg-agent.conf").read_text()
    assert list((gnupg_home / "private-keys-v1.d").glob("*.key"))  # imported again, under the new cost
    _, out = decrypt(keyring, pgp_keys, encrypted(pgp_keys, plain))
    assert out.read_bytes() == CSV
    with pytest.raises(errors.CryptoError, match="wrong passphrase"):
        decrypt(keyring, pgp_keys, encrypted(pgp_keys, plain), passphrase="not it")
