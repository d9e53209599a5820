"""A notification finishes or gives up within its timeout_s (plus a second), whatever the server does: a
webhook that trickles its answer a byte at a time, an SMTP server that trickles `220-` greeting lines
(issue 18, item 2). Each read is quick, so only a total deadline bounds them; the run is never failed.

The servers are real sockets on 127.0.0.1, each stopping by itself when the test ends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sftp_connector import notify
from sftp_connector.config import models
from sftp_connector.results import GoalResult, RunResult

TIMEOUT_S = 2.0
TRICKLE_S = 0.3  # well under TIMEOUT_S: no single read ever times out


def failed_run() -> RunResult:
    return RunResult(run="r1", trigger="cli", started_at=1.0, finished_at=2.0, status="failed",
                     goals=[GoalResult(goal="customers", kind="import-profiles", status="failed", error="boom")])


@pytest.fixture
def trickler() -> Iterator[Callable[[bytes, bytes], int]]:
    """Return start(first, then): a server on a free port that sends `first`, then `then` every TRICKLE_S,
    until the client goes or the test ends; return its port."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def serve(listener: socket.socket, first: bytes, then: bytes) -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.05)
                try:
                    conn.sendall(first)
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            conn.recv(65536)  # whatever the client says, it waits
                        conn.sendall(then)
                        time.sleep(TRICKLE_S)
                except OSError:
                    continue  # the client gave up

    def start(first: bytes, then: bytes) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        thread = threading.Thread(target=serve, args=(listener, first, then), daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)
    for listener in listeners:
        listener.close()


def test_a_webhook_answering_a_byte_at_a_time_is_given_up_on_time(
    trickler: Callable[[bytes, bytes], int], caplog: pytest.LogCaptureFixture
) -> None:
    port = trickler(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"x")
    settings = models.Notifications(webhook=models.Webhook(url=f"http://127.0.0.1:{port}/hook", timeout_s=TIMEOUT_S))
    started = time.monotonic()
    problems = notify.notify(settings, failed_run(), connector_name="crm")
    elapsed = time.monotonic() - started
    assert problems == [f"notification by webhook http://127.0.0.1:{port} failed: gave up after {TIMEOUT_S:g} s "
                        "(timeout_s): the server was still answering"]
    assert elapsed < TIMEOUT_S + 1, elapsed
    assert any(r.levelname == "WARNING" and "gave up" in r.getMessage() for r in caplog.records)


def test_an_smtp_server_trickling_its_greeting_is_given_up_on_time(
    trickler: Callable[[bytes, bytes], int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = trickler(b"220-welcome\r\n", b"220-still here\r\n")
    settings = models.Notifications(email=models.EmailNotification(
        to=["ops@example.test"], smtp=models.Smtp(host="127.0.0.1", port=port, timeout_s=TIMEOUT_S)))
    started = time.monotonic()
    problems = notify.notify(settings, failed_run(), connector_name="crm")
    elapsed = time.monotonic() - started
    assert problems == [f"notification by email failed: gave up after {TIMEOUT_S:g} s (timeout_s): the server was "
                        "still answering"]
    assert elapsed < TIMEOUT_S + 1, elapsed
