"""The disk fills while a file is downloaded or decrypted (or decompressed after decryption): the state
folder is a 2 MiB tmpfs (or, where mount is not allowed, the connector runs under a 2 MiB file size limit).
The file fails with an error naming the goal, the file and the cause, no trace; nothing is written to the
store and no temp file stays; once there is room, the next run imports it exactly once."""

from __future__ import annotations

import gzip
from collections.abc import Callable

import pytest

from tests.faults.conftest import SmallDisk
from tests.faults.helpers import (
    IMPORT,
    OLD,
    Cli,
    customers,
    expected_points,
    files_of,
    leftovers,
    points,
    runs,
    snapshot,
)
from tests.fixtures.connector import Deployment

ROWS = range(1, 3001)


def big_download(deployment: Deployment) -> str:
    """A 3 MB file that stays 3 MB encrypted: the download itself does not fit."""
    text = customers(ROWS, pad=1000)
    deployment.put_encrypted("in/customers_2.csv.gpg", text, mtime=OLD, compress=False)
    return text


def big_plaintext(deployment: Deployment) -> str:
    """A few kB encrypted (gpg compresses it) that decrypts to 3 MB: the decryption does not fit."""
    text = customers(ROWS, pad=1000, constant_pad=True)
    deployment.put_encrypted("in/customers_2.csv.gpg", text, mtime=OLD)
    return text


def big_gzip(deployment: Deployment) -> str:
    """A gzip file inside the encryption: decrypts to a few kB, which decompress to 3 MB."""
    text = customers(ROWS, pad=1000, constant_pad=True)
    deployment.put_encrypted("in/customers_2.csv.gz.gpg", gzip.compress(text.encode()), mtime=OLD)
    return text


@pytest.mark.parametrize("make", [big_download, big_plaintext, big_gzip], ids=["download", "decrypt", "decompress"])
def test_a_full_disk_fails_the_file_cleanly_and_the_next_run_imports_it(
    deployment: Deployment, small_disk: SmallDisk, make: Callable[[Deployment], str]
) -> None:
    deployment.update_connector({"state_dir": str(small_disk.path)})  # the SQLite store stays outside it
    deployment.write_goal("customers", IMPORT)
    seed = customers(range(3))
    deployment.put("in/customers_1.csv", seed, mtime=OLD)
    assert deployment.run().status == "success"
    text = make(deployment)
    before = snapshot(deployment)

    with Cli(deployment, "run", preexec_fn=small_disk.preexec()) as cli:
        code = cli.wait()

    assert code == 1, cli.stderr
    assert "Traceback" not in cli.stderr
    [_, failed] = files_of(runs(deployment)[0])
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"goal customers, file {failed['path']}: cannot ")  # every stage: the remote path
    assert failed["error"].endswith(f" in {small_disk.path}/tmp/{runs(deployment)[0]['run']}: {small_disk.cause}")
    assert failed["error"] in cli.stderr
    assert snapshot(deployment) == before
    assert leftovers(deployment) == []

    small_disk.free()
    again = deployment.run()
    assert again.status == "success", again
    assert [f.status for f in again.goals[0].files] == ["skipped_unchanged", "imported"]
    assert points(deployment) == expected_points(seed, text)
    assert [f.status for f in deployment.run().goals[0].files] == ["skipped_unchanged"] * 2


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_full_disk_under_the_sqlite_store_says_so_and_where(deployment: Deployment, small_disk: SmallDisk) -> None:
    # The store itself lives on the small disk: the file downloads (small), but the store's writes do not fit.
    deployment.update_connector({"state_dir": str(small_disk.path),
                                 "store": {"url": f"sqlite:///{small_disk.path}/connector.db"}})
    deployment.write_goal("customers", IMPORT)
    seed = customers(range(3))
    deployment.put("in/customers_1.csv", seed, mtime=OLD)
    assert deployment.run().status == "success"
    # ~0.5 MB of CSV and several MB in the store (the disk's 2 MiB in all); under a file size limit, a file
    # under the limit that makes a store file pass it
    text = customers(range(100, 20_100 if small_disk.mode == "tmpfs" else 70_100))
    deployment.put("in/customers_2.csv", text, mtime=OLD)
    before = snapshot(deployment)

    with Cli(deployment, "run", preexec_fn=small_disk.preexec()) as cli:
        code = cli.wait()

    assert code == 1, cli.stderr
    assert "Traceback" not in cli.stderr
    assert "disk I/O error" not in cli.stderr and "database or disk is full" not in cli.stderr, cli.stderr
    assert f"{small_disk.cause} in {small_disk.path}" in cli.stderr, cli.stderr
    assert "goal customers: failed (0 created, 0 updated)" in cli.stderr  # nothing was committed
    assert snapshot(deployment) == before

    small_disk.free()
    again = deployment.run()
    assert again.status == "success", again
    assert points(deployment) == expected_points(seed, text)
