"""notify.py against real servers on 127.0.0.1: aiosmtpd (plain, and STARTTLS + AUTH) and an http.server webhook."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr, ValidationError

from sftp_connector import notify
from sftp_connector.config import models
from sftp_connector.results import Counts, FileResult, GoalResult, RunResult

pytestmark = pytest.mark.timeout(60)

PASSWORD = "smtp-pass-7f3a9c"
TOKEN = "Bearer hook-token-51e2d8"
T0 = 1_767_232_800.0  # 2026-01-01T02:00:00Z


# ── runs ────────────────────────────────────────────────────────────────────────────


def failed_run(status: str = "failed") -> RunResult:
    """A run of three goals: one imported with rejects, one failed on a file, one exported."""
    customers = GoalResult(
        goal="customers", kind="import-profiles", profiles_created=3, profiles_updated=2, unique_profiles_exchanged=5,
        files=[FileResult("in/customers_2.csv", "imported", counts=Counts(rows_read=10, rows_applied=8, rows_rejected=2,
                                                                          cells_rejected=1)),
               FileResult("in/customers_1.csv", "skipped_unchanged")])
    orders = GoalResult(goal="orders", kind="import-profiles", status="failed", error="1 of 1 files failed",
                        files=[FileResult("in/orders.csv.pgp", "failed", error="wrong passphrase for the private key")])
    newsletter = GoalResult(goal="newsletter", kind="export-profiles",
                            files=[FileResult("out/newsletter.csv", "exported", rows_exported=7)])
    return RunResult(run="20260101T020000-ab12", trigger="schedule", started_at=T0, finished_at=T0 + 42,
                     status=status, goals=[customers, orders, newsletter])  # type: ignore[arg-type]


def good_run(**kwargs: Any) -> RunResult:
    goal = GoalResult(goal="customers", kind="import-profiles", profiles_created=1,
                      files=[FileResult("in/c.csv", "imported", counts=Counts(rows_read=1, rows_applied=1))])
    return RunResult(run="r-ok", trigger="cli", started_at=T0, finished_at=T0 + 1, goals=[goal], **kwargs)


# ── servers ─────────────────────────────────────────────────────────────────────────


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message it is given."""

    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.content)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield SmtpServer(controller.port, mailbox)
    controller.stop()


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1, made with cryptography."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return Cert(folder / "cert.pem", folder / "key.pem")


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"ops", PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 235/535 reply


@pytest.fixture
def tls_smtp(cert: Cert) -> Iterator[SmtpServer]:
    """An SMTP server that requires STARTTLS and AUTH (user ops, password PASSWORD)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_required=True, auth_require_tls=True,
                            authenticator=authenticate)
    controller.start()
    yield SmtpServer(controller.port, mailbox)
    controller.stop()


@dataclass
class Hook:
    """A webhook receiver: the requests it got, and the status it answers with."""

    url: str
    status: int = 200
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state.posts.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(state.status)
            if 300 <= state.status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T0/secret-path"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


# ── settings ────────────────────────────────────────────────────────────────────────


def email(port: int, when: str = "failure", **smtp: Any) -> models.EmailNotification:
    return models.EmailNotification.model_validate(
        {"to": ["ops@example.test", "oncall@example.test"], "when": when,
         "smtp": {"host": "127.0.0.1", "port": port, "from": "connector@example.test", **smtp}})


def webhook(url: str, when: str = "failure", **extra: Any) -> models.Webhook:
    return models.Webhook.model_validate({"url": url, "when": when, "headers": {"Authorization": TOKEN}, **extra})


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and TOKEN not in text and "hook-token" not in text


# ── when ────────────────────────────────────────────────────────────────────────────


def test_failure_only_sends_nothing_on_success(smtp: SmtpServer, hook: Hook) -> None:
    settings = models.Notifications(email=email(smtp.port), webhook=webhook(hook.url))
    assert notify.notify(settings, good_run(), connector_name="crm") == []
    assert smtp.mailbox.messages == [] and hook.posts == []


def test_always_sends_on_success(smtp: SmtpServer, hook: Hook) -> None:
    settings = models.Notifications(email=email(smtp.port, "always"), webhook=webhook(hook.url, "always"))
    assert notify.notify(settings, good_run(), connector_name="crm") == []
    [message] = smtp.mailbox.messages
    assert message["Subject"] == "[sftp-connector crm] run r-ok succeeded: 1 goal succeeded"
    assert message["To"] == "ops@example.test, oncall@example.test"
    assert len(hook.posts) == 1


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_failure_sends_on_failed_and_interrupted_runs(smtp: SmtpServer, status: str) -> None:
    settings = models.Notifications(email=email(smtp.port))
    assert notify.notify(settings, failed_run(status), connector_name="crm") == []
    [message] = smtp.mailbox.messages
    # A subject over 78 characters may be folded right after "Subject:"; the parser keeps the fold's space.
    assert message["Subject"].strip() == f"[sftp-connector crm] run 20260101T020000-ab12 {status}: 1 of 3 goals failed"


def test_dry_runs_never_notify(smtp: SmtpServer, hook: Hook) -> None:
    settings = models.Notifications(email=email(smtp.port, "always"), webhook=webhook(hook.url, "always"))
    run = failed_run()
    run.dry_run = True
    assert notify.notify(settings, run, connector_name="crm") == []
    assert smtp.mailbox.messages == [] and hook.posts == []


# ── email ───────────────────────────────────────────────────────────────────────────


def test_email_body_lists_goals_counts_and_errors(smtp: SmtpServer) -> None:
    notify.notify(models.Notifications(email=email(smtp.port)), failed_run(), connector_name="crm")
    [message] = smtp.mailbox.messages
    text = message.get_content()
    assert "run:      20260101T020000-ab12 (schedule)" in text
    assert "started:  2026-01-01T02:00:00.000Z" in text and "finished: 2026-01-01T02:00:42.000Z" in text
    assert "goal customers (import-profiles): success" in text
    assert "profiles: 3 created, 2 updated, 5 exchanged" in text
    assert "files:    1 imported, 0 exported, 1 skipped, 0 failed, 0 dry run" in text
    assert "rows:     10 read, 8 applied, 0 unchanged, 2 rejected, 1 cells rejected, 0 exported" in text
    assert "goal orders (import-profiles): failed" in text
    assert "error: goal orders: 1 of 1 files failed" in text
    assert "error: goal orders, file in/orders.csv.pgp: wrong passphrase for the private key" in text
    assert "goal newsletter (export-profiles): success" in text and ", 7 exported" in text


def test_starttls_and_login_with_a_trusted_certificate(tls_smtp: SmtpServer, cert: Cert,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = models.Notifications(email=email(tls_smtp.port, starttls=True, username="ops", password=PASSWORD))
    problems = notify.notify(settings, failed_run(), connector_name="crm", ssl_context=cert.client_context())
    assert problems == []
    assert len(tls_smtp.mailbox.messages) == 1
    assert_no_secret(caplog.text, tls_smtp.mailbox.raw[0].decode(), repr(settings))


def test_wrong_password_is_a_problem_that_does_not_repeat_it(tls_smtp: SmtpServer, cert: Cert,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = models.Notifications(email=email(tls_smtp.port, starttls=True, username="ops",
                                                password=PASSWORD + "-wrong"))
    [problem] = notify.notify(settings, failed_run(), connector_name="crm", ssl_context=cert.client_context())
    assert problem.startswith("notification by email failed: login refused (535")
    assert tls_smtp.mailbox.messages == []
    assert_no_secret(problem, caplog.text)
    assert [r.levelname for r in caplog.records if r.name == "sftp_connector.notify"] == ["WARNING"]


def test_untrusted_certificate_is_a_problem(tls_smtp: SmtpServer) -> None:
    settings = models.Notifications(email=email(tls_smtp.port, starttls=True, username="ops", password=PASSWORD))
    [problem] = notify.notify(settings, failed_run(), connector_name="crm")  # the system trust store
    assert "TLS certificate not trusted" in problem
    assert tls_smtp.mailbox.messages == []


def test_unreachable_smtp_port_is_a_problem_not_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    settings = models.Notifications(email=email(free_port()))
    problems = notify.notify(settings, failed_run(), connector_name="crm")
    assert problems == ["notification by email failed: connection refused (is the host and port right, "
                        "is the server up?)"]
    assert any(r.levelname == "WARNING" and "by email" in r.getMessage() for r in caplog.records)


def test_silent_smtp_server_times_out(silent_port: int) -> None:
    started = time.monotonic()
    problems = notify.notify(models.Notifications(email=email(silent_port)), failed_run(), connector_name="crm",
                             smtp_timeout_s=0.5)
    assert problems == ["notification by email failed: timed out waiting for the server"]
    assert time.monotonic() - started < 10


# ── webhook ─────────────────────────────────────────────────────────────────────────


def test_webhook_posts_text_and_the_run_as_history_json(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run = failed_run()
    assert notify.notify(models.Notifications(webhook=webhook(hook.url)), run, connector_name="crm") == []
    [(headers, body)] = hook.posts
    payload = json.loads(body)
    assert payload == {"text": "[sftp-connector crm] run 20260101T020000-ab12 failed: 1 of 3 goals failed",
                       "run": json.loads(json.dumps(run.as_json()))}
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == TOKEN
    assert_no_secret(body.decode(), caplog.text)
    assert "secret-path" not in caplog.text


def test_webhook_error_status_is_a_problem_not_an_exception(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hook.status = 500
    [problem] = notify.notify(models.Notifications(webhook=webhook(hook.url)), failed_run(), connector_name="crm")
    port = hook.url.split(":")[2].split("/")[0]
    assert problem == (f"notification by webhook http://127.0.0.1:{port} failed: "
                       "the server answered HTTP 500 Internal Server Error")
    assert_no_secret(caplog.text)
    assert "secret-path" not in caplog.text


def test_webhook_redirect_is_not_followed(hook: Hook) -> None:
    hook.status = 302
    [problem] = notify.notify(models.Notifications(webhook=webhook(hook.url)), failed_run(), connector_name="crm")
    assert "HTTP 302" in problem and "redirects are not followed" in problem
    assert len(hook.posts) == 1


def test_silent_webhook_times_out(silent_port: int) -> None:
    settings = models.Notifications(webhook=webhook(f"http://127.0.0.1:{silent_port}/x", timeout_s=0.5))
    started = time.monotonic()
    [problem] = notify.notify(settings, failed_run(), connector_name="crm")
    assert problem.endswith("timed out waiting for the server")
    assert time.monotonic() - started < 10


def test_one_channel_failing_does_not_stop_the_other(hook: Hook) -> None:
    settings = models.Notifications(email=email(free_port()), webhook=webhook(hook.url))
    problems = notify.notify(settings, failed_run(), connector_name="crm")
    assert len(problems) == 1 and "by email" in problems[0]
    assert len(hook.posts) == 1


# ── config ──────────────────────────────────────────────────────────────────────────


def test_webhook_config_defaults_and_hidden_headers() -> None:
    settings = models.Notifications.model_validate(
        {"webhook": {"url": "https://chat.example.test/hooks/abc", "headers": {"Authorization": TOKEN}}})
    assert settings.webhook is not None
    assert (settings.webhook.when, settings.webhook.timeout_s) == ("failure", 10)
    assert settings.webhook.headers["Authorization"] == SecretStr(TOKEN)
    assert_no_secret(repr(settings), str(settings), settings.model_dump_json())


@pytest.mark.parametrize("bad", [{"url": "ftp://example.test/x"}, {"url": "https://"},
                                 {"url": "https://example.test", "when": "sometimes"},
                                 {"url": "https://example.test", "timeout_s": 0},
                                 {"url": "https://example.test", "method": "PUT"}])
def test_webhook_config_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        models.Webhook.model_validate(bad)


def test_subject_of_an_interrupted_run_without_failed_goals() -> None:
    assert notify.subject(good_run(status="interrupted"), "crm") == (
        "[sftp-connector crm] run r-ok interrupted: 1 goal finished before the stop")
