"""Tell people about a run: an email (smtplib, STARTTLS) and/or a JSON webhook (urllib), per `notifications:`.

A notification never fails the run: each channel's problem is logged as a WARNING naming the
channel and the cause, and returned; no secret (SMTP password, header value, the webhook's
path, where chat tools keep their token) is ever logged or sent in a message.

A channel finishes or gives up within its `timeout_s` plus a second. The socket timeout bounds
each read only, and a server that trickles a byte a second never trips it; so each channel runs
on a thread of its own against a total deadline, and when the deadline passes its sockets are
shut down, which ends any read under way at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import smtplib
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from typing import Any

from sftp_connector.config import models
from sftp_connector.results import GoalResult, RunResult, iso

logger = logging.getLogger(__name__)

MARGIN_S = 0.5
"""Past timeout_s, how long a channel has before it is given up: a silent server's read times out first,
and says so."""
GRACE_S = 0.4
"""How long a channel's thread is given to notice its sockets were shut down."""


def notify(settings: models.Notifications, result: RunResult, *, connector_name: str,
           ssl_context: ssl.SSLContext | None = None, smtp_timeout_s: float | None = None) -> list[str]:
    """Given the notification settings and a finished run, send what `when` asks for and return the problems.

    Dry runs never notify. `ssl_context` (default: the system's trust store) checks the SMTP
    server's certificate after STARTTLS and an https webhook's; `smtp_timeout_s` overrides
    `smtp.timeout_s`. Never raises; returns within the channels' timeout_s plus a second each.
    """
    if result.dry_run:
        logger.debug("dry run: no notification sent")
        return []
    problems: list[str] = []
    email, webhook = settings.email, settings.webhook
    if email is not None and wanted(email.when, result):
        timeout_s = smtp_timeout_s or email.smtp.timeout_s
        problems += _guarded("email", timeout_s,
                             lambda deadline: send_email(email, result, connector_name, ssl_context, timeout_s,
                                                         deadline), _secrets(settings))
    if webhook is not None and wanted(webhook.when, result):
        problems += _guarded(f"webhook {_origin(webhook.url)}", webhook.timeout_s,
                             lambda deadline: send_webhook(webhook, result, connector_name, ssl_context, deadline),
                             _secrets(settings))
    return problems


class Deadline:
    """The sockets of one channel's exchange, shut down together when its time is up."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.passed = False

    def watch(self, sock: socket.socket) -> socket.socket:
        """Given a socket the exchange uses, return it, shut down at once if the deadline has passed."""
        with self._lock:
            self._sockets.append(sock)
            if self.passed:
                _shut(sock)
        return sock

    def pass_(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already, or detached into the TLS socket also watched
        sock.shutdown(socket.SHUT_RDWR)


class GaveUp(Exception):
    """A channel passed its total deadline."""


def wanted(when: str, result: RunResult) -> bool:
    """Given a channel's `when` (failure | always) and a run, return whether the channel should send."""
    return when == "always" or result.status in ("failed", "interrupted")


def subject(result: RunResult, connector_name: str) -> str:
    """Given a run, return its one-line summary, e.g. "[sftp-connector crm] run 42 failed: 2 of 5 goals failed"."""
    total = len(result.goals)
    failed = sum(g.status == "failed" for g in result.goals)
    goals = f"{total} goal{'s' * (total != 1)}"
    outcome = (f"{failed} of {total} goals failed" if failed
               else f"{goals} finished before the stop" if result.status == "interrupted"
               else f"{goals} skipped: another run holds their locks" if result.status == "skipped"
               else f"{goals} succeeded")
    status = "succeeded" if result.status == "success" else result.status
    return f"[sftp-connector {connector_name}] run {result.run} {status}: {outcome}"


def body(result: RunResult, connector_name: str) -> str:
    """Given a run, return a plain-text report: the run, then each goal with its counts and errors."""
    lines = [subject(result, connector_name), "",
             f"run:      {result.run} ({result.trigger})",
             f"started:  {iso(result.started_at)}",
             f"finished: {iso(result.finished_at) or '-'}",
             f"status:   {result.status}", ""]
    for goal in result.goals:
        lines += [*goal_lines(goal), ""]
    if not result.goals:
        lines.append("no goal ran")
    return "\n".join(lines)


def goal_lines(goal: GoalResult) -> list[str]:
    """Given one goal's result, return its report lines: status, counts, then each error with its file."""
    files = [f.status for f in goal.files]
    counts = [f.counts for f in goal.files]
    skipped = sum(s.startswith("skipped") for s in files)
    lines = [f"goal {goal.goal} ({goal.kind}): {goal.status}",
             f"  profiles: {goal.profiles_created} created, {goal.profiles_updated} updated, "
             f"{goal.unique_profiles_exchanged} exchanged",
             f"  files:    {files.count('imported')} imported, {files.count('exported')} exported, "
             f"{skipped} skipped, {files.count('failed')} failed, {files.count('dry_run')} dry run",
             f"  rows:     {sum(c.rows_read for c in counts)} read, {sum(c.rows_applied for c in counts)} applied, "
             f"{sum(c.rows_unchanged for c in counts)} unchanged, {sum(c.rows_rejected for c in counts)} rejected, "
             f"{sum(c.cells_rejected for c in counts)} cells rejected, "
             f"{sum(f.rows_exported for f in goal.files)} exported"]
    if goal.error:
        lines.append(f"  error: goal {goal.goal}: {goal.error}")
    lines += [f"  error: goal {goal.goal}, file {f.path}: {f.error}" for f in goal.files if f.error]
    lines += [f"  warning: goal {goal.goal}, file {f.path}: {f.warning}" for f in goal.files if f.warning]
    return lines


def send_email(email: models.EmailNotification, result: RunResult, connector_name: str,
               ssl_context: ssl.SSLContext | None, timeout_s: float, deadline: Deadline | None = None) -> None:
    """Given the email settings and a run, send the report. Raise smtplib/OSError/ssl errors as they come."""
    smtp = email.smtp
    message = EmailMessage()
    message["Subject"] = subject(result, connector_name)
    message["From"] = smtp.from_
    message["To"] = ", ".join(email.to)
    message.set_content(body(result, connector_name))
    with _Smtp(deadline or Deadline(), smtp.host, smtp.port, timeout=timeout_s) as client:
        if smtp.starttls:
            client.starttls(context=ssl_context or ssl.create_default_context())
            client.watch_tls()
        if smtp.username:
            client.login(smtp.username, smtp.password.get_secret_value() if smtp.password else "")
        client.send_message(message)
    logger.info("notified %d recipient(s) by email via %s:%d", len(email.to), smtp.host, smtp.port)


class _Smtp(smtplib.SMTP):
    """smtplib's client with its sockets watched by a deadline (the greeting is read while connecting)."""

    def __init__(self, deadline: Deadline, host: str, port: int, timeout: float) -> None:
        self._deadline = deadline
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's own hook for the connection (not in its type stubs, being private).
        return self._deadline.watch(super()._get_socket(host, port, timeout))  # type: ignore[misc]

    def watch_tls(self) -> None:
        """STARTTLS replaced the socket by a TLS one: watch that too."""
        if self.sock is not None:
            self._deadline.watch(self.sock)


def _watched(connection: type[http.client.HTTPConnection], deadline: Deadline) -> type[http.client.HTTPConnection]:
    """Given an http.client connection class, return one whose sockets (plain, then TLS) the deadline watches."""

    class Watched(connection):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            create: Any = self._create_connection  # type: ignore[has-type]
            self._create_connection = lambda *args, **kwargs: deadline.watch(create(*args, **kwargs))
            super().connect()
            deadline.watch(self.sock)

    return Watched


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self._deadline), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._deadline, self._tls = deadline, context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPSConnection, self._deadline), req, context=self._tls)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the (secret) headers to wherever the answer points."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def send_webhook(webhook: models.Webhook, result: RunResult, connector_name: str,
                 ssl_context: ssl.SSLContext | None, deadline: Deadline | None = None) -> None:
    """Given the webhook settings and a run, POST {"text", "run"} as JSON. Raise urllib/OSError on failure."""
    payload = {"text": subject(result, connector_name), "run": result.as_json()}
    headers = {"Content-Type": "application/json", "User-Agent": "sftp-connector",
               **{name: value.get_secret_value() for name, value in webhook.headers.items()}}
    request = urllib.request.Request(webhook.url, data=json.dumps(payload).encode(), headers=headers,
                                     method="POST")
    deadline = deadline or Deadline()
    https = _HttpsHandler(deadline, ssl_context or ssl.create_default_context())
    opener = urllib.request.build_opener(_NoRedirect, _HttpHandler(deadline), https)
    with opener.open(request, timeout=webhook.timeout_s) as response:
        response.read()
    logger.info("notified webhook %s (HTTP %d)", _origin(webhook.url), response.status)


def _guarded(channel: str, timeout_s: float, send: Callable[[Deadline], None], secrets: Iterable[str]) -> list[str]:
    """Call send(deadline) on a thread, giving up after timeout_s; on any failure, log and return one problem
    naming the channel and the cause."""
    deadline, failure = Deadline(), []

    def attempt() -> None:
        try:
            send(deadline)
        except Exception as exc:  # a notification must never fail the run, whatever went wrong
            failure.append(exc)

    worker = threading.Thread(target=attempt, name=f"notify {channel}", daemon=True)
    worker.start()
    worker.join(timeout_s + MARGIN_S)
    if worker.is_alive():
        deadline.pass_()
        worker.join(GRACE_S)  # its reads end at once; a thread that still lingers is a daemon, left behind
        failure[:] = [GaveUp(f"gave up after {timeout_s:g} s (timeout_s): the server was still answering")]
    if not failure:
        return []
    problem = f"notification by {channel} failed: {_redact(_cause(failure[0]), secrets)}"
    logger.warning("%s", problem)
    return [problem]


def _cause(exc: BaseException) -> str:
    """Given the exception a channel raised, return the cause in words an operator can act on."""
    if isinstance(exc, GaveUp):
        return str(exc)
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return "timed out waiting for the server"  # smtplib re-raises a read timeout as SMTPServerDisconnected
    if isinstance(exc, urllib.error.HTTPError):
        moved = " (redirects are not followed: give the final URL)" if 300 <= exc.code < 400 else ""
        return f"the server answered HTTP {exc.code} {exc.reason}{moved}"
    if isinstance(exc, urllib.error.URLError):
        return _cause(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"login refused ({exc.smtp_code} {_text(exc.smtp_error)})"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"the server does not support it: {exc}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the server answered {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the host and port right, is the server up?)"
    return f"{type(exc).__name__}: {exc}"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _origin(url: str) -> str:
    """Given a URL, return scheme://host[:port] only: the user info and path may hold a token."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _secrets(settings: models.Notifications) -> list[str]:
    """Given the settings, return the secret values a cause must never repeat."""
    found = [v.get_secret_value() for v in settings.webhook.headers.values()] if settings.webhook else []
    if settings.email and settings.email.smtp.password:
        found.append(settings.email.smtp.password.get_secret_value())
    if settings.webhook:
        found.append(urllib.parse.urlsplit(settings.webhook.url).path)
    return [s for s in found if len(s) >= 3]


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
