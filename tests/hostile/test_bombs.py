"""Compression bombs, end to end: refused at `max_file_bytes`, with the process's memory and disk kept small.

Each bomb is 200 MB of zeros squeezed small: by gpg's own compression inside OpenPGP
(~200 KB), as a gzip file inside OpenPGP, and as a plain bz2 file (177 bytes). With
`max_file_bytes: 1MB` each is refused with a message naming the cap, nothing is written,
and while `sftp-connector run` works on them the state folder never holds much more than
the cap (sampled every few milliseconds) and the process's peak memory stays within 100 MiB
of a run that imports a small file.

A bomb also stops the work promptly: a lone encrypted file is merged while gpg decrypts it, so
once its plaintext passes the cap no further batch may start, however slow each batch is
(`slow_batches`, a processor plugin that notes each batch and sleeps, stands in for a slow
merge). The CSV bombs hold 20 MB of distinct rows, then 140 MB of one row again, squeezed to
about 3 MB; with a 16 MB cap the streamed one has stopped after at most a few batches (about 10
fit under the cap), and the gzip one inside OpenPGP and a bomb in a linked set (decrypted whole
before any row is read) before the first.
"""

from __future__ import annotations

import bz2
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from sftp_connector import errors, pgp
from sftp_connector.config import models
from tests.fixtures.connector import ROOT, Deployment
from tests.fixtures.gpg import PgpKeys, gpg_env, short_home
from tests.hostile.helpers import OLD, assert_no_traceback, cli_run, error_of, files_of, store_contents

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
# Runs the command line like Deployment.cli, then reports its own and its children's (gpg's) peak memory. Its
# own is VmHWM, the peak of this program's memory: ru_maxrss would count the memory of the process that forked
# it (pytest, hundreds of MiB late in a full run), which Linux carries over the exec.
MEASURED = """\
import re, resource, runpy, sys
sys.argv[0] = "sftp-connector"
try:
    runpy.run_module("sftp_connector", run_name="__main__")
finally:
    own = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
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


# ── the cap stops the work promptly ──────────────────────────────────────────────────
ROWS_CAP = 16 * MB
SLOW_GOALS = {
    "streamed": [{"name": "customers", "directory": "streamed", "pattern": "*"}],
    "gzipped": [{"name": "customers", "directory": "gzipped", "pattern": "*"}],
    "linked": [{"name": "customers", "directory": "linked", "pattern": "customers_*.csv.gpg"},
               {"name": "orders", "directory": "linked", "pattern": "orders_*.csv",
                "link": {"parent": "email", "child": "email"}}],
}


def _rows_bomb(write: Any) -> None:
    """Write a CSV bomb: 20 MB of distinct rows (more than the cap), then 140 MB of one row again."""
    write(b"email,name\n")
    for start in range(0, 900_000, 100_000):
        write(b"".join(f"u{i}@example.test,N\n".encode() for i in range(start, start + 100_000)))
    again = b"dup@example.test,N\n" * 50_000
    for _ in range(140 * MB // len(again)):
        write(again)


@pytest.fixture(scope="module")
def row_bombs(pgp_keys: PgpKeys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CSV bomb compressed by gpg inside OpenPGP, and gzipped then encrypted, by kind (about 5 s)."""
    base = tmp_path_factory.mktemp("row-bombs")
    gpg = ["gpg", "--homedir", str(pgp_keys.sender_home), "--batch", "--yes", "--no-tty", "--trust-model",
           "always", "--recipient", pgp_keys.connector_fpr, "--encrypt"]
    with subprocess.Popen([*gpg, "--compress-algo", "zlib", "-z", "9", "--output", str(base / "pgp")],
                          stdin=subprocess.PIPE, env=gpg_env()) as proc:
        assert proc.stdin is not None
        _rows_bomb(proc.stdin.write)
        proc.stdin.close()
    assert proc.returncode == 0
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    with (base / "gz").open("wb") as out:
        _rows_bomb(lambda block: out.write(gz.compress(block)))
        out.write(gz.flush())
    pgp_keys.gpg_encrypt(base / "gz", base / "gz.gpg", recipient_fpr=pgp_keys.connector_fpr, compress=False)
    return {"pgp": base / "pgp", "gzip": base / "gz.gpg"}


def slow_goal(name: str, notes: Path) -> dict[str, Any]:
    """Given one of SLOW_GOALS and where its batches are noted, return the goal: each batch takes 2 s."""
    return {"kind": "import-profiles", "name": name, "files": SLOW_GOALS[name], "stable_after_s": 0,
            "max_file_bytes": ROWS_CAP, "identifiers": [{"field": "email", "property": "email"}],
            "mappings": [{"field": "name", "property": "name"}],
            "processors": [{"type": "slow_batches", "seconds": 2, "to": str(notes)}]}


def test_a_bomb_stops_the_import_at_the_next_batch_and_writes_nothing(
    deployment: Deployment, slow_plugin: Path, row_bombs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(slow_plugin))  # this process reads the goals too (store_contents)
    notes = {name: deployment.dir / f"{name}.notes" for name in SLOW_GOALS}
    for name in SLOW_GOALS:
        deployment.write_goal(name, slow_goal(name, notes[name]))
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(slow_plugin)])}
    for seed in ("streamed/a_seed.csv", "gzipped/a_seed.csv"):
        deployment.put(seed, f"email,name\n{seed.split('/')[0]}@example.test,Seed\n", mtime=OLD)
    deployment.put_encrypted("linked/customers_0.csv.gpg", "email,name\nlinked@example.test,Seed\n", mtime=OLD)
    deployment.put("linked/orders_0.csv", "email,order\nlinked@example.test,O0\n", mtime=OLD)
    seeded = cli_run(deployment, env=env)[1]
    assert seeded["status"] == "success", [(g["goal"], g.get("error")) for g in seeded["goals"]]
    before = store_contents(deployment)
    for note in notes.values():
        note.unlink(missing_ok=True)

    deployment.put("streamed/b_bomb.csv.gpg", row_bombs["pgp"].read_bytes(), mtime=OLD)
    deployment.put("gzipped/bomb.csv.gz.gpg", row_bombs["gzip"].read_bytes(), mtime=OLD)
    deployment.put("linked/customers_1.csv.gpg", row_bombs["pgp"].read_bytes(), mtime=OLD)
    deployment.put("linked/orders_1.csv", "email,order\nu1@example.test,O1\n", mtime=OLD)
    done, run = cli_run(deployment, env=env)

    assert done.returncode == 1, done.stderr
    remote = deployment.remote.remote
    causes = {name: error_of(files_of(run, name)[file], name, remote)
              for name, file in [("streamed", "b_bomb.csv.gpg"), ("gzipped", "bomb.csv.gz.gpg"),
                                 ("linked", "customers_1.csv.gpg")]}
    assert causes == {"streamed": f"decrypted size exceeds max_file_bytes ({ROWS_CAP})",
                      "gzipped": f"decompressed size exceeds max_file_bytes ({ROWS_CAP} bytes)",
                      "linked": f"decrypted size exceeds max_file_bytes ({ROWS_CAP})"}
    assert files_of(run, "linked")["orders_1.csv"]["status"] == "failed"
    batches = {name: note.read_text().splitlines() if note.exists() else [] for name, note in notes.items()}
    # About 10 batches fit under the cap; each takes 2 s, in which gpg reaches the cap many times over. The
    # first one or two were read before it did (the reader reads a megabyte ahead), no more are started.
    assert len(batches["streamed"]) <= 3, batches["streamed"]
    assert batches["gzipped"] == batches["linked"] == [], batches
    assert store_contents(deployment) == before  # no profile, and no file marked imported
    assert not (deployment.dir / "state" / "rejects" / run["run"]).exists()
    tmp = deployment.dir / "state" / "tmp"
    assert not [p for p in tmp.rglob("*") if p.is_file()], "decrypted or downloaded copies were left behind"


@pytest.fixture(scope="module")
def keyring(pgp_keys: PgpKeys) -> Iterator[pgp.Keyring]:
    parent = short_home()
    config = models.Pgp(gnupg_home=parent / "gnupg", decrypt=models.PgpDecrypt(
        private_key=pgp_keys.connector_private, passphrase=SecretStr(pgp_keys.passphrase)))
    keyring = pgp.open_keyring(config, parent / "unused")
    yield keyring
    pgp.stop_agent(keyring)
    shutil.rmtree(parent, ignore_errors=True)


def test_a_reader_of_a_decryption_past_the_cap_gets_the_size_error_at_its_next_read(
    keyring: pgp.Keyring, pgp_keys: PgpKeys, row_bombs: dict[str, Path], tmp_path: Path
) -> None:
    src = tmp_path / "bomb.csv.gpg"
    src.write_bytes(row_bombs["pgp"].read_bytes())
    decryption = pgp.Decryption(keyring, src, tmp_path / "out.csv", passphrase=pgp_keys.passphrase,
                                max_bytes=ROWS_CAP)
    with decryption.open() as file:
        assert file.read(11) == b"email,name\n"
        deadline = time.monotonic() + 30
        while not decryption.failed:  # what the import checks between batches
            assert time.monotonic() < deadline, "gpg did not pass the cap"
            time.sleep(0.01)
        with pytest.raises(errors.InputError, match=rf"decrypted size exceeds max_file_bytes \({ROWS_CAP}\)"):
            file.read()  # the plaintext gpg wrote before the cap is still there, but no longer served
    with pytest.raises(errors.InputError, match=r"decrypted size exceeds max_file_bytes"):
        decryption.wait()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bomb.csv.gpg"]
