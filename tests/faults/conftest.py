"""Fixtures of the fault tests: an sshd of the test's own (to stop and restart), and a small disk."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.gpg import PgpKeys
from tests.fixtures.sshd import SshServer, running_sshd

DISK_BYTES = 2 * 2**20


@pytest.fixture
def passphrase(pgp_keys: PgpKeys, monkeypatch: pytest.MonkeyPatch) -> str:
    """Set TEST_PGP_PASSPHRASE (connector.yaml reads it) for deployments made without the fixture."""
    monkeypatch.setenv("TEST_PGP_PASSPHRASE", pgp_keys.passphrase)
    return pgp_keys.passphrase


@pytest.fixture
def own_sshd(passphrase: str) -> Iterator[SshServer]:
    """Yield an sshd for this test alone, which it may stop and restart (the session's must keep running)."""
    with running_sshd() as server:
        yield server


@dataclass
class SmallDisk:
    """A 2 MiB "disk" for the state folder: a tmpfs when mount works here, else a file size limit
    (RLIMIT_FSIZE) on the connector's process. Either way a write past 2 MiB fails."""

    path: Path
    mode: str
    full: bool = True

    @property
    def cause(self) -> str:
        """The words the connector's error gives for the fault."""
        return "no space left on device" if self.mode == "tmpfs" else "file too large"

    def preexec(self) -> Callable[[], None] | None:
        """The subprocess set-up that makes the limit apply (None for a tmpfs, which needs none)."""
        if self.mode == "tmpfs" or not self.full:
            return None

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_BYTES, DISK_BYTES))

        return limit

    def free(self) -> None:
        """Make room: grow the tmpfs to 64 MiB, or lift the limit."""
        if self.mode == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.path)], check=True, timeout=10)
        self.full = False


def _mount(path: Path) -> bool:
    if os.environ.get("SFTPC_TEST_DISK") == "rlimit":  # to exercise the fallback where mount works
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(path)],
                          capture_output=True, timeout=10)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """Yield a SmallDisk, choosing tmpfs or RLIMIT_FSIZE at run time; always unmount after."""
    path = tmp_path / "small-disk"
    path.mkdir()
    mounted = _mount(path)
    try:
        yield SmallDisk(path, "tmpfs" if mounted else "rlimit")
    finally:
        if mounted:
            done = subprocess.run(["umount", str(path)], capture_output=True, timeout=10)
            if done.returncode != 0:
                with contextlib.suppress(subprocess.SubprocessError):
                    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)
