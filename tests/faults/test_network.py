"""Network faults, caused for real: a connection cut in the middle of a download and of an upload (a
CuttingProxy between the connector and the real sshd, retries exhausted), and the server killed mid-download
and started again while the connector waits to retry (it recovers by itself). Each time the store is as if
nothing had happened, and the next run is exactly-once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from tests.faults.helpers import (
    IMPORT,
    OLD,
    SshdSwitch,
    customers,
    decrypted,
    deployment_on,
    direct,
    expected_points,
    exporting,
    leftovers,
    points,
    remote_names,
    snapshot,
    through,
)
from tests.fixtures.connector import Deployment
from tests.fixtures.gpg import PgpKeys
from tests.fixtures.proxy import CuttingProxy
from tests.fixtures.sshd import SshServer


def test_a_download_cut_on_every_retry_fails_the_file_and_writes_nothing(deployment: Deployment,
                                                                          sshd: SshServer) -> None:
    deployment.write_goal("customers", IMPORT)
    seed = customers(range(3))
    deployment.put("in/customers_1.csv", seed, mtime=OLD)
    assert deployment.run().status == "success"
    big = customers(range(1, 1201), pad=512)  # ~650 kB, encrypted without compression: as large
    deployment.put_encrypted("in/customers_2.csv.gpg", big, mtime=OLD, compress=False)
    before = snapshot(deployment)

    with CuttingProxy(sshd.host, sshd.port, cut_down_after=128 * 1024) as proxy:
        through(deployment, sshd, proxy)
        broken = deployment.run()

    assert proxy.cuts == 2  # the first try and its one retry (sftp.retries: 1)
    assert broken.status == "failed"
    [unchanged, failed] = broken.goals[0].files
    assert unchanged.status == "skipped_unchanged" and failed.status == "failed"
    path = f"{deployment.remote.remote}/in/customers_2.csv.gpg"
    assert f"goal customers, file {path}: cannot download {path}" in (failed.error or "")
    assert snapshot(deployment) == before
    assert leftovers(deployment) == []

    direct(deployment, sshd)
    again = deployment.run()
    assert again.status == "success"
    assert [f.status for f in again.goals[0].files] == ["skipped_unchanged", "imported"]
    assert points(deployment) == expected_points(seed, big)  # C1, C2 in both files: counted once per file
    assert [f.status for f in deployment.run().goals[0].files] == ["skipped_unchanged"] * 2
    assert points(deployment) == expected_points(seed, big)


def test_an_upload_cut_on_every_retry_leaves_nothing_on_the_server_and_the_next_run_resends(
    deployment: Deployment, sshd: SshServer
) -> None:
    deployment.write_goal("customers", IMPORT)
    exporting(deployment)
    deployment.put("in/customers_1.csv", customers(range(3000), pad=64), mtime=OLD)
    assert deployment.run("customers").status == "success"
    before = snapshot(deployment)

    with CuttingProxy(sshd.host, sshd.port, cut_after=64 * 1024) as proxy:  # the encrypted export is ~150 kB
        through(deployment, sshd, proxy)
        broken = deployment.run("newsletter")

    assert proxy.cuts == 2
    assert broken.status == "failed"
    error = broken.goals[0].error or ""
    assert error.startswith(f"goal newsletter: cannot upload {deployment.remote.remote}/out/newsletter_")
    assert remote_names(deployment) == []  # neither the file nor its partial
    assert snapshot(deployment) == before  # the watermark did not move
    assert leftovers(deployment) == []

    direct(deployment, sshd)
    again = deployment.run("newsletter")
    assert again.status == "success"
    [sent] = again.goals[0].files
    assert sent.rows_exported == 3000  # the same profiles
    name = sent.path.rsplit("/", 1)[1]
    assert remote_names(deployment) == [name]
    assert len(decrypted(deployment, name)) == 3001
    assert deployment.run("newsletter").goals[0].files == []  # sent once: nothing changed since


class RestartOnSecondRetry(logging.Handler):
    """Starts the server again (in a thread, as an operator would) once the connector has logged that its first
    retry failed too: the restart happens while it waits the 2 s before the second retry."""

    def __init__(self, switch: SshdSwitch) -> None:
        super().__init__()
        self.thread = threading.Thread(target=switch.start, daemon=True)

    def emit(self, record: logging.LogRecord) -> None:
        if "retry 2 of 3" in record.getMessage() and not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()


def test_the_server_restarted_during_the_backoff_the_run_recovers_by_itself(
    own_sshd: SshServer, pgp_keys: PgpKeys, store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    switch = SshdSwitch(own_sshd)
    restart = RestartOnSecondRetry(switch)
    crashed: list[tuple[int, int]] = []

    def crash(_what: str, done: int, total: int, _unit: str) -> None:
        if not crashed:
            crashed.append((done, total))
            switch.stop()

    with deployment_on(tmp_path / "deploy", own_sshd, pgp_keys, store_url, "restart") as deployment:
        deployment.update_connector({"sftp": {"retries": 3}})
        deployment.write_goal("customers", IMPORT)
        # 6 MB: far more than paramiko lets be in flight (a 2 MiB window) when the server dies
        big = customers(range(1500), pad=4000)
        deployment.put_encrypted("in/customers_1.csv.gpg", big, mtime=OLD, compress=False)
        before = snapshot(deployment)
        sftp_log = logging.getLogger("sftp_connector.sftp")
        sftp_log.addHandler(restart)
        try:
            with caplog.at_level(logging.WARNING, logger="sftp_connector"):
                result = deployment.run(progress=crash)
            again = deployment.run()
        finally:
            sftp_log.removeHandler(restart)
            if restart.thread.ident is not None:
                restart.thread.join(15)
            switch.close()

        [(done, total)] = crashed
        assert done < total  # killed mid-download
        retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
        assert retries[0].startswith(f"download {deployment.remote.remote}/in/customers_1.csv.gpg failed")
        assert "retry 1 of 3 in 1.0s" in retries[0]
        assert "connection refused); retry 2 of 3 in 2.0s" in retries[1]  # the first retry met the stopped server
        assert len(retries) == 2  # the second found it started again
        assert result.status == "success", result
        [file] = result.goals[0].files
        assert (file.status, file.counts.rows_applied) == ("imported", 1500)
        assert before["profiles"] == []
        assert [f.status for f in again.goals[0].files] == ["skipped_unchanged"]
        assert points(deployment) == expected_points(big)
        assert leftovers(deployment) == []
