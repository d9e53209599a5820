"""The process killed outright (SIGKILL: the OOM killer, a power cut) at every stage of an import and an
export: during the download, after it, after decryption, in the middle of the store write, during the upload,
and between the upload and the watermark. The store is left as it was, nothing partial stays on the server or
(after the next run) in state/tmp, and the next run is exactly-once, except that a kill between the upload and
the watermark sends the same profiles again: exports are at-least-once in that window.

The exact points are the connector's failpoints (`SFTP_CONNECTOR_FAILPOINTS`); "during" a transfer is a real
SIGKILL sent while a CuttingProxy holds the transfer half-way.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.helpers import (
    IMPORT,
    OLD,
    Cli,
    customers,
    decrypted,
    direct,
    expected_points,
    exporting,
    leftovers,
    points,
    remote_names,
    runs,
    snapshot,
    through,
    until,
)
from tests.fixtures.connector import Deployment
from tests.fixtures.proxy import CuttingProxy
from tests.fixtures.sshd import SshServer

KILLED = -signal.SIGKILL


def seeded(deployment: Deployment) -> str:
    """Write the import goal, import a first small file, and return its text."""
    deployment.write_goal("customers", IMPORT)
    seed = customers(range(3))
    deployment.put("in/customers_1.csv", seed, mtime=OLD)
    assert deployment.run().status == "success"
    return seed


def exported_ok(deployment: Deployment) -> None:
    """Import 3000 customers (with a random pad, so the encrypted export is ~150 kB) for the export goal."""
    deployment.write_goal("customers", IMPORT)
    exporting(deployment)
    deployment.put("in/customers_1.csv", customers(range(3000), pad=64), mtime=OLD)
    assert deployment.run("customers").status == "success"


def recovers_exactly_once(deployment: Deployment, *texts: str) -> None:
    """The next run imports the file the killed one did not; the one after changes nothing; state/tmp is empty."""
    again = deployment.run()
    assert again.status == "success", again
    assert [f.status for f in again.goals[0].files] == ["skipped_unchanged", "imported"]
    assert points(deployment) == expected_points(*texts)
    assert leftovers(deployment) == []
    assert runs(deployment)[1]["status"] == "interrupted"  # the killed run, as the next run found it
    assert [f.status for f in deployment.run().goals[0].files] == ["skipped_unchanged"] * 2
    assert points(deployment) == expected_points(*texts)


@pytest.mark.parametrize("point", ["after-download", "after-decrypt", "mid-merge"])
def test_sigkill_at_an_import_stage_writes_nothing(deployment: Deployment, point: str) -> None:
    seed = seeded(deployment)
    new = customers(range(1, 2001))
    deployment.put_encrypted("in/customers_2.csv.gpg", new, mtime=OLD)
    before = snapshot(deployment)

    killed = deployment.cli("run", env={"SFTP_CONNECTOR_FAILPOINTS": point}, timeout=60)

    assert killed.returncode == KILLED, killed.stderr
    assert snapshot(deployment) == before
    # The killed process could not tidy up: its copies are still in state/tmp. Mid-merge that is the download
    # too: a lone file is merged while gpg decrypts it, and the download is removed once gpg is done.
    copies = [p.name.rsplit("customers_2.csv", 1)[1] for p in leftovers(deployment) if p.is_file()]
    assert sorted(copies) == {"after-download": [".gpg"], "after-decrypt": [".gpg.plain"],
                              "mid-merge": [".gpg", ".gpg.plain"]}[point]
    recovers_exactly_once(deployment, seed, new)


def test_sigkill_during_a_download_writes_nothing(deployment: Deployment, sshd: SshServer) -> None:
    seed = seeded(deployment)
    new = customers(range(1, 1201), pad=512)
    deployment.put_encrypted("in/customers_2.csv.gpg", new, mtime=OLD, compress=False)  # ~650 kB
    before = snapshot(deployment)

    with CuttingProxy(sshd.host, sshd.port, stall_down_after=128 * 1024) as proxy:
        through(deployment, sshd, proxy)
        with Cli(deployment, "run") as cli:
            assert proxy.stalled.wait(30), cli.stderr
            assert until(lambda: any(p.name.endswith(".part") for p in leftovers(deployment)), 10)
            cli.kill()
    assert cli.proc.returncode == KILLED

    assert snapshot(deployment) == before
    assert [p.name for p in leftovers(deployment) if p.name.endswith(".part")]  # the half-downloaded file
    direct(deployment, sshd)
    recovers_exactly_once(deployment, seed, new)


def test_sigkill_during_an_upload_leaves_no_file_and_the_next_run_resends(deployment: Deployment,
                                                                          sshd: SshServer) -> None:
    exported_ok(deployment)
    before = snapshot(deployment)

    with CuttingProxy(sshd.host, sshd.port, stall_after=64 * 1024) as proxy:
        through(deployment, sshd, proxy)
        with Cli(deployment, "run", "newsletter") as cli:
            assert proxy.stalled.wait(30), cli.stderr
            assert until(lambda: remote_names(deployment) != [], 10)
            cli.kill()
    assert cli.proc.returncode == KILLED

    # Readers never see it: only the hidden partial name exists, and it is incomplete.
    [partial] = remote_names(deployment)
    assert partial.startswith(".newsletter_") and partial.endswith(".partial")
    assert snapshot(deployment) == before
    # An hour on (a live upload keeps its partial's mtime fresh), the next upload there removes it.
    hour_ago = time.time() - 2 * 3600
    os.utime(deployment.remote_path(f"out/{partial}"), (hour_ago, hour_ago))
    direct(deployment, sshd)
    again = deployment.run("newsletter")
    assert again.status == "success", again
    [sent] = again.goals[0].files
    name = sent.path.rsplit("/", 1)[1]
    assert sent.rows_exported == 3000
    assert remote_names(deployment) == [name]
    assert len(decrypted(deployment, name)) == 3001
    assert leftovers(deployment) == []
    assert deployment.run("newsletter").goals[0].files == []


def test_sigkill_between_the_upload_and_the_watermark_sends_the_same_profiles_again(
    deployment: Deployment,
) -> None:
    deployment.write_goal("customers", IMPORT)
    exporting(deployment)
    deployment.put("in/customers_1.csv", customers(range(30)), mtime=OLD)
    assert deployment.run("customers").status == "success"
    before = snapshot(deployment)

    killed = deployment.cli("run", "newsletter", env={"SFTP_CONNECTOR_FAILPOINTS": "after-upload"}, timeout=60)

    assert killed.returncode == KILLED, killed.stderr
    [first] = remote_names(deployment)
    assert len(decrypted(deployment, first)) == 31  # placed whole
    assert snapshot(deployment) == before  # but the watermark did not move
    again = deployment.run("newsletter")
    [sent] = again.goals[0].files
    second = sent.path.rsplit("/", 1)[1]
    assert sent.rows_exported == 30 and second != first
    assert remote_names(deployment) == sorted([first, second])
    assert decrypted(deployment, second) == decrypted(deployment, first)  # at-least-once: the same rows twice
    assert leftovers(deployment) == []
    assert deployment.run("newsletter").goals[0].files == []  # from here on, once
