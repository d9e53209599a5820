"""SSH servers that misbehave, and a known_hosts file that does (issue 18, item 15): each gives one clear line
naming the server and the cause, never a traceback, never paramiko's own ERROR lines.

- a real sshd that accepts the login, then drops the session (a ChrootDirectory it refuses to enter): not
  "login refused";
- a server that accepts the TCP connection and says nothing, and one that trickles its banner;
- a known_hosts line that is not a host key: `run` and `validate --connect` name the file and the line.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.helpers import IMPORT, OLD, Cli, customers, deployment_on
from tests.fixtures.connector import Deployment
from tests.fixtures.gpg import PgpKeys
from tests.fixtures.sshd import SshServer, running_sshd


def assert_one_clear_line(stderr: str, cause: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert not [line for line in stderr.splitlines() if " ERROR paramiko" in line], stderr
    assert cause in stderr, stderr


@pytest.fixture
def chrooted_sshd(passphrase: str, tmp_path: Path) -> Iterator[SshServer]:
    """An sshd whose sftpc-key user is chrooted into a folder sshd refuses (not owned by root): the login
    succeeds, then the session is dropped."""
    jail = tmp_path / "jail"
    jail.mkdir(mode=0o777)
    jail.chmod(0o777)
    with running_sshd(f"Match User sftpc-key\n  ChrootDirectory {jail}\n") as server:
        yield server


def test_a_server_that_drops_the_session_after_the_login_is_not_a_refused_login(
    chrooted_sshd: SshServer, pgp_keys: PgpKeys, tmp_path: Path
) -> None:
    with deployment_on(tmp_path / "deploy", chrooted_sshd, pgp_keys, f"sqlite:///{tmp_path}/c.db", "in-jail") as d:
        d.write_goal("customers", IMPORT)
        with Cli(d, "run") as cli:
            code = cli.wait()
    assert code == 1
    assert "login refused" not in cli.stderr, cli.stderr
    assert_one_clear_line(cli.stderr, f"the server accepted the login of sftpc-key@127.0.0.1:{chrooted_sshd.port} "
                                      "and then closed the connection")


@pytest.fixture
def fake_server() -> Iterator[Callable[[bytes, float], int]]:
    """Return start(banner, every): a TCP server that sends `banner` a byte at a time, one byte every `every`
    seconds (never, if `every` is 0: it stays silent); return its port. Stops by itself when the test ends."""
    stop = threading.Event()
    listeners: list[socket.socket] = []

    def serve(listener: socket.socket, banner: bytes, every: float) -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=talk, args=(conn, banner, every), daemon=True).start()

    def talk(conn: socket.socket, banner: bytes, every: float) -> None:
        with conn, contextlib.suppress(OSError):
            for byte in (banner if every else b""):
                if stop.wait(every):
                    return
                conn.sendall(bytes([byte]))
            stop.wait(60)

    def start(banner: bytes, every: float) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        threading.Thread(target=serve, args=(listener, banner, every), daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    stop.set()
    for listener in listeners:
        listener.close()


@pytest.mark.parametrize(("banner", "every"), [(b"", 0.0), (b"SSH-2.0-" + b"x" * 200 + b"\r\n", 0.2)],
                         ids=["silent", "trickling"])
def test_a_silent_or_trickling_server_fails_in_one_line(
    deployment: Deployment, sshd: SshServer, fake_server: Callable[[bytes, float], int], banner: bytes, every: float
) -> None:
    port = fake_server(banner, every)
    deployment.update_connector({"sftp": {"port": port, "known_hosts": None, "host_key_fingerprint": sshd.fingerprint,
                                          "timeout_s": 2, "retries": 0}})
    deployment.write_goal("customers", IMPORT)
    started = time.monotonic()
    with Cli(deployment, "run") as cli:
        code = cli.wait()
    assert code == 1
    assert_one_clear_line(cli.stderr, f"cannot connect to 127.0.0.1:{port}: ")
    assert time.monotonic() - started < 60


def test_a_malformed_known_hosts_line_is_named_not_a_traceback(deployment: Deployment, sshd: SshServer) -> None:
    known_hosts = deployment.dir / "keys" / "known_hosts"
    good = known_hosts.read_text()
    known_hosts.write_text("# partners\n" + good + "[127.0.0.1]:2222 ssh-ed25519 AAAA!!!notbase64\n")
    deployment.write_goal("customers", IMPORT)
    deployment.put("in/customers_1.csv", customers(range(3)), mtime=OLD)
    # run names it when it connects; validate checks it first (exit 2), naming the connector.yaml key too.
    said = f"{known_hosts}: line 3 is not a host key line (the key is not valid base64): fix or remove it"
    for command in (["run"], ["validate", "--connect"]):
        with Cli(deployment, *command) as cli:
            code = cli.wait()
        assert code != 0, command
        assert_one_clear_line(cli.stdout + cli.stderr, said)
