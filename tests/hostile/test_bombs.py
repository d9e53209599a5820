"""Compression bombs, end to end: refused at `max_file_bytes`, with the process's memory and disk kept small.

Each bomb is 200 MB of zeros squeezed small: by gpg's own compression inside OpenPGP
(~200 KB), as a gzip file inside OpenPGP, and as a plain bz2 file (177 bytes). With
`max_file_bytes: 1MB` each is refused with a message naming the cap, nothing is written,
and while `sftp-connector run` works on them the state folder never holds much more than
the cap (sampled every few milliseconds) and the process's peak memory stays within 100 MiB
of a run that imports a small file.
"""

from __future__ import annotations

import bz2
import contextlib
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

from sftp_connector.config import models
from tests.fixtures.connector import ROOT, Deployment
from tests.fixtures.gpg import PgpKeys, gpg_env
from tests.hostile.helpers import OLD, assert_no_traceback, error_of, files_of, store_contents

MB = 10**6
BOMB_BYTES = 200 * 2**20
CAP = "1MB"
GOAL = f"""\
kind: import-profiles
name: bombs
files: [{{name: customers, directory: in, pattern: "*"}}]
stable_after_s: 0
max_file_bytes: {CAP}
identifiers: [{{field: email, property: email}}]
mappings: [{{field: name, property: name}}]
"""
# Runs the command line like Deployment.cli, then reports its own and its children's (gpg's) peak memory.
MEASURED = """\
import resource, runpy, sys
sys.argv[0] = "sftp-connector"
try:
    runpy.run_module("sftp_connector", run_name="__main__")
finally:
    own, children = (resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    sys.stderr.write(f"\\nPEAK_RSS_KIB {own} {children}\\n")
"""


def _zeros(write: Any) -> None:
    block = bytes(2**20)
    for _ in range(BOMB_BYTES // len(block)):
        write(block)


def _compressed(compressor: Any) -> bytes:
    parts: list[bytes] = []
    _zeros(lambda block: parts.append(compressor.compress(block)))
    return b"".join(parts) + compressor.flush()


@pytest.fixture(scope="module")
def bombs(pgp_keys: PgpKeys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bombs by remote file name, made once for the module (about 4 s)."""
    base = tmp_path_factory.mktemp("bombs")
    gpg = ["gpg", "--homedir", str(pgp_keys.sender_home), "--batch", "--yes", "--no-tty", "--trust-model",
           "always", "--recipient", pgp_keys.connector_fpr, "--encrypt"]
    with subprocess.Popen([*gpg, "--compress-algo", "zlib", "-z", "9", "--output", str(base / "pgp")],
                          stdin=subprocess.PIPE, env=gpg_env()) as proc:
        assert proc.stdin is not None
        _zeros(proc.stdin.write)
        proc.stdin.close()
    assert proc.returncode == 0
    (base / "gz").write_bytes(_compressed(zlib.compressobj(9, zlib.DEFLATED, 31)))
    pgp_keys.gpg_encrypt(base / "gz", base / "gz.gpg", recipient_fpr=pgp_keys.connector_fpr, compress=False)
    return {"pgp_bomb.csv.gpg": (base / "pgp").read_bytes(),
            "gzip_bomb.csv.gz.gpg": (base / "gz.gpg").read_bytes(),
            "bz2_bomb.csv.bz2": _compressed(bz2.BZ2Compressor(9))}


class DiskWatch:
    """Samples the bytes held in the state folder (the store's files aside) until stopped; keeps the peak."""

    def __init__(self, state: Path) -> None:
        self.state, self.peak, self._stop = state, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.wait(0.003):
            self.peak = max(self.peak, self._held())

    def _held(self) -> int:
        total = 0
        for folder, _, names in os.walk(self.state):
            for name in names:
                if not name.startswith("connector.db"):
                    with contextlib.suppress(FileNotFoundError):  # a temp file removed meanwhile
                        total += os.stat(os.path.join(folder, name)).st_size
        return total


def measured_run(deployment: Deployment) -> tuple[subprocess.CompletedProcess[str], int, int]:
    """Run `sftp-connector run --json`; return it with the peak bytes in the state folder and peak RSS in KiB."""
    command = [sys.executable, "-c", MEASURED, "--config", str(deployment.config_path), "--log-format", "plain",
               "run", "--json"]
    with DiskWatch(deployment.dir / "state") as disk:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=deployment.dir,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    *_, own, children = done.stderr.rstrip().rsplit(maxsplit=2)
    return done, disk.peak, max(int(own), int(children))


def test_bombs_are_refused_at_max_file_bytes_with_memory_and_disk_bounded(
    deployment: Deployment, bombs: dict[str, bytes]
) -> None:
    deployment.write_goal("bombs", GOAL)
    deployment.put("in/a_seed.csv", "email,name\nseed@example.test,Seed\n", mtime=OLD)
    seed, _, baseline_kib = measured_run(deployment)
    assert seed.returncode == 0, seed.stderr
    before = store_contents(deployment)

    for name, data in bombs.items():
        deployment.put(f"in/{name}", data, mtime=OLD)
    deployment.put("in/plain_too_big.csv", "email,name\n" + "big@example.test,x\n" * 80_000, mtime=OLD)
    done, disk_peak, peak_kib = measured_run(deployment)

    assert_no_traceback(done)
    files = files_of(__import__("json").loads(done.stdout.splitlines()[-1]))
    assert done.returncode == 1
    assert files.pop("a_seed.csv")["status"] == "skipped_unchanged"
    causes = {name: error_of(file, "bombs", deployment.remote.remote) for name, file in files.items()}
    assert causes == {
        "pgp_bomb.csv.gpg": f"decrypted size exceeds max_file_bytes ({MB})",
        "gzip_bomb.csv.gz.gpg": f"decompressed size exceeds max_file_bytes ({MB} bytes)",
        "bz2_bomb.csv.bz2": f"decompressed size exceeds max_file_bytes ({MB} bytes)",
        "plain_too_big.csv": f"{files['plain_too_big.csv']['path']} is 1520011 bytes, over the limit of {MB} bytes "
                             "(max_file_bytes)",
    }
    assert store_contents(deployment) == before
    # Capped: the work folder never held much more than the cap (a bomb's ciphertext, its capped plaintext).
    assert 0 < disk_peak < 2 * MB, disk_peak
    assert peak_kib < baseline_kib + 100 * 1024, (peak_kib, baseline_kib)


def test_default_max_file_bytes_is_a_cap() -> None:
    goal = models.ImportProfiles.model_validate({
        "kind": "import-profiles", "name": "g", "files": [{"name": "f", "pattern": "*.csv"}],
        "identifiers": [{"field": "email", "property": "email"}]})
    assert goal.max_file_bytes == 10 * 2**30  # 10 GiB, as documented: finite, larger than any real partner file
    assert models.ImportProfiles.model_validate({**goal.model_dump(), "max_file_bytes": "1MB"}).max_file_bytes == MB
