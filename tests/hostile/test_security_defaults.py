"""Security by default, end to end: host keys are never added, the GnuPG home is private, and no secret appears
in any output, log, history, store, reject file or notification of a representative set of commands.

Secret-file permissions (0600, owned by the connector's user) are checked in test_config_fuzz.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlmodel import SQLModel

from sftp_connector.store import db
from tests.fixtures.connector import Deployment
from tests.fixtures.sshd import KEY_PASSPHRASE, SshServer
from tests.hostile.helpers import OLD, assert_no_traceback, cli_run, error_of, files_of, store_contents

GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv.gpg"}]
stable_after_s: 0
identifiers: [{field: email, property: email}]
mappings: [{field: name, property: name}, {field: points, property: points, rule: sum}]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ── host keys ────────────────────────────────────────────────────────────────────────


def test_an_unknown_host_key_is_refused_and_never_added(deployment: Deployment, sshd: SshServer,
                                                        tmp_path: Path) -> None:
    deployment.write_goal("customers", GOAL)
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,name,points\na@example.test,A,1\n", mtime=OLD)
    known_hosts = deployment.dir / "keys" / "known_hosts"
    known_hosts.write_text("")
    home = tmp_path / "home"  # the user's ~/.ssh must not be read or written either
    home.mkdir()
    before = store_contents(deployment)

    done, run = cli_run(deployment, env={"HOME": str(home)})

    assert done.returncode == 1
    assert run["goals"][0]["error"] == (
        f"goal customers: unknown host key for {sshd.host}:{sshd.port} (ssh-ed25519 {sshd.fingerprint}): add it to "
        f"known_hosts, e.g. ssh-keyscan -p {sshd.port} {sshd.host} >> {known_hosts}")
    assert known_hosts.read_bytes() == b"" and list(home.iterdir()) == []
    assert store_contents(deployment) == before

    known_hosts.unlink()  # no known_hosts at all: refused too, and not created
    result = deployment.run()
    assert result.goals[0].error == f"goal customers: cannot read known_hosts {known_hosts}: no such file or directory"
    assert not known_hosts.exists()
    assert store_contents(deployment) == before


# ── the GnuPG home and the state folder ──────────────────────────────────────────────


def test_the_gnupg_home_is_private_and_the_users_is_never_used(deployment: Deployment, tmp_path: Path) -> None:
    gnupg_home = Path((deployment.dir / "gnupg-home").read_text())
    gnupg_home.chmod(0o755)  # loosened by hand: the connector takes it back
    users_home, users_gnupg = tmp_path / "home", tmp_path / "users-gnupg"
    users_gnupg.mkdir(parents=True)
    (users_gnupg / "pubring.kbx").write_bytes(b"the user's own keyring")
    users_home.mkdir()

    done = deployment.cli("keys", "list", env={"HOME": str(users_home), "GNUPGHOME": str(users_gnupg)})

    assert_no_traceback(done)
    assert done.returncode == 0 and deployment.keys.connector_fpr in done.stdout, done.stderr
    info = gnupg_home.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.geteuid())
    assert stat.S_IMODE((gnupg_home / "private-keys-v1.d").stat().st_mode) == 0o700
    assert "default-cache-ttl 0" in (gnupg_home / "gpg-agent.conf").read_text()  # the passphrase is never cached
    assert sorted(p.name for p in users_gnupg.iterdir()) == ["pubring.kbx"]
    assert list(users_home.iterdir()) == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_sqlite_store_is_private(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL)
    deployment.remote.user.mkdir(f"{deployment.remote.local.name}/in")
    assert deployment.run().status == "success"
    store = Path(deployment.store_url.removeprefix("sqlite:///"))
    assert stat.S_IMODE(store.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((deployment.dir / "state").stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_everything_the_connector_creates_in_state_is_private(deployment: Deployment) -> None:
    # A state folder given in the configuration, several levels deep and not yet there: every level the
    # connector creates, the work and lock folders, lock files and reject files are this user's only.
    state = deployment.dir / "var" / "lib" / "connector"
    deployment.update_connector({"state_dir": str(state)})
    deployment.write_goal("customers", GOAL)
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,name,points\na@example.test,A,x\n", mtime=OLD)
    assert deployment.run().status in ("success", "partial")
    made = [state.parent.parent, state.parent, state, *state.rglob("*")]
    assert state / "tmp" in made and state / "locks" in made and state / "rejects" in made
    loose = {str(path): oct(stat.S_IMODE(path.stat().st_mode)) for path in made
             if stat.S_IMODE(path.stat().st_mode) & 0o077}
    assert loose == {}


# ── secrets ──────────────────────────────────────────────────────────────────────────


SECRETS = {
    "SFTP_PASSWORD": None,  # the sshd fixture's password of sftpc-both, filled in below
    "SSH_KEY_PASSPHRASE": "ssh-Key-Pass-4417",
    "WEBHOOK_TOKEN": "whk-Token-8830",
    "SMTP_PASSWORD": "smtp-Pass-2291",
}
URL_TOKEN = "urlPathToken6610"  # chat webhooks keep their token in the URL's path
WRONG = {"SFTP_PASSWORD": "Wr0ng-sftp-pw-51", "TEST_PGP_PASSPHRASE": "Wr0ng-pgp-pass-77"}


@dataclass
class Receivers:
    """A webhook receiver that answers 500 echoing the request's headers, and an SMTP server with AUTH."""

    hook_port: int
    smtp_port: int
    hook_headers: list[dict[str, str]] = field(default_factory=list)
    hook_bodies: list[bytes] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    mails: list[bytes] = field(default_factory=list)


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    found = Receivers(0, free_port())

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            found.hook_headers.append(dict(self.headers))
            found.hook_bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            echo = str(self.headers).encode()  # a hostile receiver sends the secret back: it must not be logged
            self.send_response(500, "echo " + str(self.headers).replace("\n", " "))
            self.send_header("Content-Length", str(len(echo)))
            self.end_headers()
            self.wfile.write(echo)

        def log_message(self, *args: Any) -> None:
            pass

    class Mailbox:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            found.mails.append(envelope.content)
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            found.logins.append((data.login, data.password))
        return AuthResult(success=True, handled=False)

    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    found.hook_port = http.server_address[1]
    threading.Thread(target=http.serve_forever, daemon=True).start()
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=found.smtp_port, auth_require_tls=False,
                      authenticator=authenticate)
    smtp.start()
    yield found
    smtp.stop()
    http.shutdown()


@pytest.fixture
def secret_deployment(deployment: Deployment, sshd: SshServer, receivers: Receivers) -> Iterator[Deployment]:
    """The deployment logged in as sftpc-both (key with a passphrase + password), notifying by email and webhook."""
    user = sshd.users["sftpc-both"]
    folder = user.mkdir(f"secrets-{uuid.uuid4().hex[:8]}")
    key = deployment.dir / "keys" / "id_ed25519_pw"
    shutil.copy(sshd.keys["ed25519-passphrase"], key)
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", KEY_PASSPHRASE, "-N", SECRETS["SSH_KEY_PASSPHRASE"], "-f",
                    str(key)], check=True, capture_output=True, timeout=30)
    deployment.update_connector({
        "sftp": {"username": user.username, "home": str(folder), "auth": {
            "method": "key+password", "private_key": "keys/id_ed25519_pw", "passphrase": "${SSH_KEY_PASSPHRASE}",
            "password": "${SFTP_PASSWORD}"}},
        "notifications": {
            "email": {"to": ["ops@example.test"], "when": "always", "smtp": {
                "host": "127.0.0.1", "port": receivers.smtp_port, "username": "ops", "password": "${SMTP_PASSWORD}"}},
            "webhook": {"url": "${WEBHOOK_URL}", "when": "always",
                        "headers": {"Authorization": "Bearer ${WEBHOOK_TOKEN}"}, "timeout_s": 5}}})
    deployment.write_goal("customers", GOAL)
    deployment.remote = type(deployment.remote)(user, folder, str(folder))
    yield deployment
    shutil.rmtree(folder, ignore_errors=True)


def every_row(deployment: Deployment) -> str:
    """Return every row of every store table, run history included, as text."""
    store = db.open_store(deployment.config().connector.store.url)
    try:
        with store.engine.connect() as conn:
            return repr([list(conn.execute(sa.select(table))) for table in SQLModel.metadata.sorted_tables])
    finally:
        store.dispose()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store's own secret: the test below
def test_secrets_never_appear_in_outputs_logs_history_store_or_files(
    secret_deployment: Deployment, sshd: SshServer, receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = secret_deployment
    secrets = {**SECRETS, "SFTP_PASSWORD": sshd.users["sftpc-both"].password}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEBHOOK_URL", f"http://127.0.0.1:{receivers.hook_port}/hooks/{URL_TOKEN}")
    watched = [*secrets.values(), f"Bearer {secrets['WEBHOOK_TOKEN']}", deployment.keys.passphrase, URL_TOKEN,
               *WRONG.values()]
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,name,points\na@example.test,A,1\nb@example.test,B,x\n",
                             mtime=OLD)
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}

    def command(label: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = deployment.cli("-v", "--log-format", "json", *args, env=env)
        assert_no_traceback(done)
        outputs[label] = done
        return done

    ok = command("run ok", "run", "--json")
    assert ok.returncode == 0, ok.stderr
    assert files_of(json.loads(ok.stdout))["customers_1.csv.gpg"]["cells_rejected"] == 1  # a rejects file exists
    readers = {"validate": ["validate"], "validate --connect": ["validate", "--connect"],
               "history --json": ["history", "--json"], "history": ["history"], "profiles dump": ["profiles", "dump"]}
    with ThreadPoolExecutor(len(readers)) as pool:  # they only read: side by side, to save time
        assert all(done.returncode == 0 for done in pool.map(lambda item: command(item[0], *item[1]),
                                                             readers.items()))
    assert command("keys list", "keys", "list").returncode == 0
    assert command("preview", "preview", "customers").returncode == 0
    deployment.put("in/customers_2.csv.gpg", b"\x85\x01\x0cnot really pgp data", mtime=OLD)
    deployment.put_encrypted("in/customers_3.csv.gpg", "email,name\nc@example.test,C\n", mtime=OLD)
    bad_pgp = command("run, wrong PGP passphrase", "run", "--json",
                      env={"TEST_PGP_PASSPHRASE": WRONG["TEST_PGP_PASSPHRASE"]})
    causes = {n: error_of(f, "customers", deployment.remote.remote) for n, f in files_of(json.loads(bad_pgp.stdout))
              .items() if f["status"] == "failed"}
    assert causes["customers_3.csv.gpg"] == "wrong passphrase for the connector's private key", causes
    bad_sftp = command("run, wrong SFTP password", "run", "--json", env={"SFTP_PASSWORD": WRONG["SFTP_PASSWORD"]})
    assert "login refused for sftpc-both@" in json.loads(bad_sftp.stdout)["goals"][0]["error"]
    monkeypatch.delenv("SMTP_PASSWORD")
    unset = command("validate, a variable unset", "validate")
    assert unset.returncode == 2 and "environment variable SMTP_PASSWORD is not set" in unset.stderr
    monkeypatch.setenv("SMTP_PASSWORD", secrets["SMTP_PASSWORD"])

    # The secrets were used: the grep below is not vacuous.
    assert receivers.logins and receivers.logins[0] == (b"ops", secrets["SMTP_PASSWORD"].encode())
    assert {h["Authorization"] for h in receivers.hook_headers} == {f"Bearer {secrets['WEBHOOK_TOKEN']}"}
    assert any('"level": "DEBUG"' in done.stderr or '"level":"DEBUG"' in done.stderr for done in outputs.values())

    places = {f"{label}: {stream}": getattr(done, stream) for label, done in outputs.items()
              for stream in ("stdout", "stderr")}
    places["the store, history included"] = every_row(deployment)
    places.update({f"webhook body {i}": body.decode() for i, body in enumerate(receivers.hook_bodies)})
    places.update({f"email {i}": mail.decode(errors="replace") for i, mail in enumerate(receivers.mails)})
    gnupg_home = Path((deployment.dir / "gnupg-home").read_text())
    for base in (deployment.dir, gnupg_home, deployment.remote.local):
        for path in base.rglob("*"):
            if path.is_file() and not path.is_socket():
                places[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert any(p.startswith(str(deployment.dir / "state" / "rejects")) for p in places)
    leaks = [(secret, where) for secret in watched for where, text in places.items() if secret in text]
    assert leaks == []


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_the_store_password_never_appears(deployment: Deployment) -> None:
    password = "Pg-Pass-3391"  # the test server trusts 127.0.0.1, so any password logs in
    url = deployment.store_url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{password}@")
    deployment.update_connector({"store": {"url": url}})
    deployment.write_goal("customers", GOAL)
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,name,points\na@example.test,A,1\n", mtime=OLD)
    ok = deployment.cli("-v", "--log-format", "json", "run", "--json")
    history = deployment.cli("-v", "--log-format", "json", "history", "--json")
    port = url.rsplit(":", 1)[1].split("/", 1)[0]
    deployment.update_connector({"store": {"url": url.replace(f":{port}/", f":{free_port()}/")}})
    down = deployment.cli("-v", "--log-format", "json", "run", "--json")
    for done in (ok, history, down):
        assert_no_traceback(done)
    assert (ok.returncode, history.returncode, down.returncode) == (0, 0, 1), down.stderr
    assert "cannot open the store postgresql+psycopg://postgres:***@127.0.0.1:" in down.stderr
    assert not [done.args for done in (ok, history, down) if password in done.stdout + done.stderr]
