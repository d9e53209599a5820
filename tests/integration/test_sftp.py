"""The SFTP transport's contract, against a real OpenSSH sshd (tests/fixtures/sshd.py)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from sftp_connector import errors, sftp
from tests.fixtures.sshd import KEY_PASSPHRASE, SftpDir, SshServer


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp, "BACKOFF_S", 0.01)


@pytest.fixture
def session(sshd: SshServer) -> Iterator[sftp.Session]:
    with sftp.connect(sshd.config()) as opened:
        yield opened


def _refused(sshd: SshServer, **kwargs: object) -> errors.TransportError:
    with pytest.raises(errors.TransportError) as caught:
        sftp.connect(sshd.config(**kwargs)).close()
    return caught.value


# ── login ───────────────────────────────────────────────────────────────────────────


def test_password_login(sshd: SshServer) -> None:
    with sftp.connect(sshd.config("sftpc-pass", "password")) as session:
        assert session.list(".") == []


@pytest.mark.parametrize("key", ["ed25519", "ecdsa256", "ecdsa384", "ecdsa521", "rsa",
                                 "rsa-pem", "ed25519-passphrase", "rsa-pem-passphrase"])
def test_key_login(sshd: SshServer, key: str) -> None:
    sshd.users["sftpc-key"].put(f"keys-{key}.txt", key)
    with sftp.connect(sshd.config("sftpc-key", "key", key)) as session:
        assert session.stat(f"keys-{key}.txt") is not None


def test_key_and_password_login(sshd: SshServer) -> None:
    with sftp.connect(sshd.config("sftpc-both", "key+password")) as session:
        assert session.list(".") == []


def test_wrong_password_is_refused_in_words(sshd: SshServer, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    caplog.set_level(logging.DEBUG)
    error = _refused(sshd, user="sftpc-pass", method="password",
                     auth={"password": "not-the-Secret-9"})
    assert str(error) == f"login refused for sftpc-pass@127.0.0.1:{sshd.port} (password)"
    assert not error.transient
    assert "not-the-Secret-9" not in caplog.text


def test_key_and_wrong_password_names_the_step(sshd: SshServer) -> None:
    error = _refused(sshd, user="sftpc-both", method="key+password",
                     auth={"password": "not-the-Secret-9"})
    assert "(key+password: password refused)" in str(error)
    assert "not-the-Secret-9" not in str(error)


def test_key_alone_where_both_are_required(sshd: SshServer) -> None:
    error = _refused(sshd, user="sftpc-both", method="key")
    assert f"login refused for sftpc-both@127.0.0.1:{sshd.port} (key)" in str(error)


def test_unauthorized_key_is_refused(sshd: SshServer) -> None:
    error = _refused(sshd, user="sftpc-pass", method="key")
    assert str(error).startswith(f"login refused for sftpc-pass@127.0.0.1:{sshd.port} (key)")


def test_wrong_passphrase(sshd: SshServer) -> None:
    error = _refused(sshd, key="ed25519-passphrase", auth={"passphrase": "wrong-Phrase-7"})
    assert "wrong passphrase" in str(error)
    assert "wrong-Phrase-7" not in str(error) and KEY_PASSPHRASE not in str(error)
    assert not error.transient


def test_missing_passphrase(sshd: SshServer) -> None:
    error = _refused(sshd, key="ed25519", auth={"private_key": sshd.keys["ed25519-passphrase"]})
    assert "is encrypted: give sftp.auth.passphrase" in str(error)


def test_passphrase_for_a_plain_key_is_ignored(sshd: SshServer) -> None:
    with sftp.connect(sshd.config(auth={"passphrase": "unused-Phrase"})) as session:
        session.list(".")


@pytest.mark.filterwarnings("ignore:SSH DSA keys are deprecated")
def test_dsa_key_is_refused_with_advice(sshd: SshServer) -> None:
    error = _refused(sshd, key="dsa")
    assert "DSA" in str(error) and "ssh-keygen -t ed25519" in str(error)
    assert not error.transient


# ── host keys ───────────────────────────────────────────────────────────────────────


def _host_key_error(sshd: SshServer, monkeypatch: pytest.MonkeyPatch, **overrides: object
                    ) -> errors.HostKeyError:
    monkeypatch.setattr(sftp.time, "sleep", lambda _s: pytest.fail("a host key was retried"))
    with pytest.raises(errors.HostKeyError) as caught:
        sftp.connect(sshd.config(retries=3, **overrides))
    assert not caught.value.transient
    return caught.value


def test_unknown_host_key_is_refused(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _host_key_error(sshd, monkeypatch, known_hosts=sshd.empty_known_hosts)
    assert str(error).startswith(
        f"unknown host key for 127.0.0.1:{sshd.port} (ssh-ed25519 {sshd.fingerprint}): "
        f"add it to known_hosts, e.g. ssh-keyscan -p {sshd.port} 127.0.0.1 >> ")


def test_changed_host_key_is_refused(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _host_key_error(sshd, monkeypatch, known_hosts=sshd.changed_known_hosts)
    assert str(error).startswith(f"host key changed for 127.0.0.1:{sshd.port} ")
    assert "man-in-the-middle" in str(error)


def test_hashed_known_hosts(sshd: SshServer) -> None:
    assert "|1|" in sshd.hashed_known_hosts.read_text()
    sftp.connect(sshd.config(known_hosts=sshd.hashed_known_hosts)).close()


def test_fingerprint_pin(sshd: SshServer) -> None:
    sftp.connect(sshd.config(known_hosts=None, host_key_fingerprint=sshd.fingerprint)).close()


def test_wrong_fingerprint_pin(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _host_key_error(sshd, monkeypatch, known_hosts=None,
                            host_key_fingerprint="SHA256:" + "A" * 43)
    assert f"host key changed for 127.0.0.1:{sshd.port}" in str(error)


def test_unreachable_server_is_transient_and_retried(sshd: SshServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(sftp.time, "sleep", sleeps.append)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(errors.TransportError) as caught:
            sftp.connect(sshd.config(port=port, retries=2))
    assert caught.value.transient and "connection refused" in str(caught.value)
    assert sleeps == [0.01, 0.02]


def test_proxy_jump(sshd: SshServer) -> None:
    sshd.users["sftpc-key"].put("jumped.txt", "via the bastion")
    config = sshd.config(proxy_jump=f"sftpc-jump@127.0.0.1:{sshd.port}")
    with sftp.connect(config) as session:
        assert session.stat("jumped.txt") is not None


# ── operations ──────────────────────────────────────────────────────────────────────


def test_list_regular_files_sorted(session: sftp.Session, sftp_dir: SftpDir) -> None:
    sftp_dir.user.put(f"{sftp_dir.local.name}/b.csv", "bb", mtime=1_700_000_000)
    sftp_dir.user.put(f"{sftp_dir.local.name}/a.csv", "a", mtime=1_600_000_000)
    sftp_dir.user.mkdir(f"{sftp_dir.local.name}/sub")
    (sftp_dir.local / "link.csv").symlink_to(sftp_dir.local / "a.csv")
    assert session.list(sftp_dir.remote) == [
        sftp.RemoteFile(f"{sftp_dir.remote}/a.csv", 1, 1_600_000_000),
        sftp.RemoteFile(f"{sftp_dir.remote}/b.csv", 2, 1_700_000_000),
    ]
    assert [f.name for f in session.list(sftp_dir.local.name)] == ["a.csv", "b.csv"]


def test_list_missing_directory(session: sftp.Session, sftp_dir: SftpDir) -> None:
    with pytest.raises(errors.TransportError) as caught:
        session.list(f"{sftp_dir.remote}/nope")
    assert str(caught.value) == (f"cannot list {sftp_dir.remote}/nope: no such file or directory; relative goal "
                                 f"directories are resolved against sftp.home ({sftp_dir.user.remote_home})")
    assert not caught.value.transient


def test_list_permission_denied(session: sftp.Session, sftp_dir: SftpDir) -> None:
    (sftp_dir.local / "locked").mkdir(mode=0o700)  # root's
    with pytest.raises(errors.TransportError, match="locked: permission denied"):
        session.list(f"{sftp_dir.remote}/locked")


def test_stat(session: sftp.Session, sftp_dir: SftpDir) -> None:
    sftp_dir.user.put(f"{sftp_dir.local.name}/x.csv", "xyz", mtime=1_650_000_000)
    assert session.stat(f"{sftp_dir.remote}/x.csv") == sftp.RemoteFile(
        f"{sftp_dir.remote}/x.csv", 3, 1_650_000_000)
    assert session.stat(f"{sftp_dir.remote}/missing.csv") is None
    with pytest.raises(errors.TransportError, match="not a regular file"):
        session.stat(sftp_dir.remote)


def test_download(session: sftp.Session, sftp_dir: SftpDir, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    sftp_dir.user.put(f"{sftp_dir.local.name}/big.bin", data)
    remote = session.list(sftp_dir.remote)[0]
    session.download(remote, tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == data
    assert os.listdir(tmp_path) == ["big.bin"]


def test_download_over_max_bytes(session: sftp.Session, sftp_dir: SftpDir, tmp_path: Path
                                 ) -> None:
    sftp_dir.user.put(f"{sftp_dir.local.name}/big.csv", "x" * 100)
    remote = session.list(sftp_dir.remote)[0]
    with pytest.raises(errors.InputError, match="over the limit of 99 bytes"):
        session.download(remote, tmp_path / "big.csv", max_bytes=99)
    assert os.listdir(tmp_path) == []


def test_download_size_changed(session: sftp.Session, sftp_dir: SftpDir, tmp_path: Path) -> None:
    sftp_dir.user.put(f"{sftp_dir.local.name}/grew.csv", "x" * 100)
    listed = sftp.RemoteFile(f"{sftp_dir.remote}/grew.csv", 60, 0)
    with pytest.raises(errors.TransportError, match="got 100 bytes, the listing said 60"):
        session.download(listed, tmp_path / "grew.csv")
    assert os.listdir(tmp_path) == []


def test_download_missing(session: sftp.Session, sftp_dir: SftpDir, tmp_path: Path) -> None:
    gone = sftp.RemoteFile(f"{sftp_dir.remote}/gone.csv", 1, 0)
    with pytest.raises(errors.TransportError, match=r"gone\.csv: no such file or directory"):
        session.download(gone, tmp_path / "gone.csv")
    assert os.listdir(tmp_path) == []


def test_download_reconnects_after_a_dropped_connection(session: sftp.Session,
                                                         sftp_dir: SftpDir, tmp_path: Path
                                                         ) -> None:
    sftp_dir.user.put(f"{sftp_dir.local.name}/a.csv", "after the drop")
    remote = session.list(sftp_dir.remote)[0]
    session._link.transport.sock.shutdown(socket.SHUT_RDWR)  # the network drops
    session.download(remote, tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text() == "after the drop"


def test_upload_atomic(session: sftp.Session, sftp_dir: SftpDir, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "out.csv").write_bytes(b"a,b\n" * 50_000)
    target = sftp_dir.local / "new" / "out.csv"
    partial = target.parent / sftp.partial_name("out.csv")
    seen: list[tuple[bool, int]] = []
    rename = paramiko.SFTPClient.posix_rename

    def spy(client: paramiko.SFTPClient, old: str, new: str) -> None:
        seen.append((target.exists(), partial.stat().st_size))
        rename(client, old, new)

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", spy)
    session.upload_atomic(tmp_path / "out.csv", f"{sftp_dir.remote}/new/out.csv")
    assert seen == [(False, 200_000)]  # until the rename, only the partial name exists
    assert target.read_bytes() == b"a,b\n" * 50_000
    assert os.listdir(target.parent) == ["out.csv"]


def test_upload_replaces_without_posix_rename(session: sftp.Session, sftp_dir: SftpDir,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    def unsupported(*_args: object) -> None:
        raise OSError("Operation unsupported")

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", unsupported)
    sftp_dir.user.put(f"{sftp_dir.local.name}/out.csv", "old")
    (tmp_path / "out.csv").write_text("new")
    session.upload_atomic(tmp_path / "out.csv", f"{sftp_dir.remote}/out.csv")
    assert (sftp_dir.local / "out.csv").read_text() == "new"
    assert os.listdir(sftp_dir.local) == ["out.csv"]


def test_upload_failure_leaves_no_partial(session: sftp.Session, sftp_dir: SftpDir,
                                          tmp_path: Path) -> None:
    sftp_dir.user.mkdir(f"{sftp_dir.local.name}/out.csv/occupied")  # a directory in the way
    (tmp_path / "out.csv").write_text("data")
    with pytest.raises(errors.TransportError, match="cannot upload"):
        session.upload_atomic(tmp_path / "out.csv", f"{sftp_dir.remote}/out.csv")
    assert os.listdir(sftp_dir.local) == ["out.csv"]


def test_upload_into_unwritable_directory(session: sftp.Session, sftp_dir: SftpDir,
                                          tmp_path: Path) -> None:
    (sftp_dir.local / "ro").mkdir(mode=0o755)  # root's: the user cannot write there
    (tmp_path / "out.csv").write_text("data")
    with pytest.raises(errors.TransportError, match="permission denied"):
        session.upload_atomic(tmp_path / "out.csv", f"{sftp_dir.remote}/ro/out.csv")
    assert os.listdir(sftp_dir.local / "ro") == []


def test_move(session: sftp.Session, sftp_dir: SftpDir) -> None:
    sftp_dir.user.put(f"{sftp_dir.local.name}/in.csv", "new")
    sftp_dir.user.put(f"{sftp_dir.local.name}/done/x/in.csv", "old")
    moved = session.move(f"{sftp_dir.remote}/in.csv", f"{sftp_dir.remote}/done/x")
    assert moved == f"{sftp_dir.remote}/done/x/in.csv"
    assert (sftp_dir.local / "done" / "x" / "in.csv").read_text() == "new"
    assert not (sftp_dir.local / "in.csv").exists()
    assert session.move(moved, f"{sftp_dir.remote}/archive/2024") == (
        f"{sftp_dir.remote}/archive/2024/in.csv")
    with pytest.raises(errors.TransportError, match="no such file or directory"):
        session.move(f"{sftp_dir.remote}/in.csv", f"{sftp_dir.remote}/done")


def test_remove_is_idempotent(session: sftp.Session, sftp_dir: SftpDir) -> None:
    sftp_dir.user.put(f"{sftp_dir.local.name}/x.csv", "x")
    session.remove(f"{sftp_dir.remote}/x.csv")
    session.remove(f"{sftp_dir.remote}/x.csv")
    assert os.listdir(sftp_dir.local) == []


def test_remove_refused(session: sftp.Session, sftp_dir: SftpDir) -> None:
    (sftp_dir.local / "ro").mkdir(mode=0o755)
    (sftp_dir.local / "ro" / "x.csv").write_text("root's")
    with pytest.raises(errors.TransportError, match=r"ro/x\.csv: permission denied"):
        session.remove(f"{sftp_dir.remote}/ro/x.csv")


def test_makedirs(session: sftp.Session, sftp_dir: SftpDir) -> None:
    session.makedirs(f"{sftp_dir.remote}/a/b/c")
    session.makedirs(f"{sftp_dir.remote}/a/b/c")
    assert (sftp_dir.local / "a" / "b" / "c").is_dir()
    sftp_dir.user.put(f"{sftp_dir.local.name}/file", "x")
    with pytest.raises(errors.TransportError, match="a file is in the way"):
        session.makedirs(f"{sftp_dir.remote}/file/sub")


def test_close_is_idempotent(sshd: SshServer) -> None:
    session = sftp.connect(sshd.config())
    session.close()
    session.close()


# ── pure helpers ────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("home", "directory", "expected"), [
    ("/", ".", "/"),
    ("/", "in", "/in"),
    ("/data/acme", "in/", "/data/acme/in"),
    ("/data/acme", "/abs/dir", "/abs/dir"),
    ("/data/acme", "../other", "/data/other"),
    ("/data", "../../..", "/"),
    ("/", "//double//slash", "/double/slash"),
])
def test_resolve(home: str, directory: str, expected: str) -> None:
    assert sftp.resolve(home, directory) == expected


@pytest.mark.parametrize("remote", [
    "/in/customers.csv.gpg", "/in/..", "..", "/", "", "/in/../../etc/passwd",
    "/in/new\nline.csv", "/in/tab\tand\x00nul\x1b.csv", "/in/" + "x" * 500 + ".csv",
    "/in/ünïcödé.csv", "/in/.hidden",
])
def test_local_name_is_one_safe_component(remote: str, tmp_path: Path) -> None:
    name = sftp.local_name(remote)
    assert name not in ("", ".", "..") and "/" not in name and len(name) <= 150
    assert name.isprintable() and name.isascii()
    assert name == sftp.local_name(remote)
    assert (tmp_path / name).parent == tmp_path


def test_local_name_keeps_suffixes_and_tells_paths_apart() -> None:
    assert sftp.local_name("/in/customers.csv.gpg").endswith("_customers.csv.gpg")
    assert sftp.local_name("/a/x.csv") != sftp.local_name("/b/x.csv")
    assert sftp.local_name("/in/a?b.csv") != sftp.local_name("/in/a*b.csv")
