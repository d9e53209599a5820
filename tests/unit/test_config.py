"""Configuration loading: every problem reported at once with its file and key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sftp_connector.config import load
from sftp_connector.errors import ConfigError

CONNECTOR = """\
sftp:
  host: sftp.example.com
  username: acme
  auth: {method: password, password: "${SFTP_PASSWORD}"}
  known_hosts: keys/known_hosts
store:
  url: sqlite:///state/connector.db
"""

GOAL = """\
kind: import-profiles
name: customers
files:
  - {name: customers, directory: in, pattern: "customers_*.csv"}
identifiers:
  - {field: email, property: email}
mappings:
  - {field: first_name, property: first_name, rule: set}
"""


def deploy(tmp_path: Path, connector: str = CONNECTOR, goals: dict[str, str] | None = None) -> Path:
    (tmp_path / "goals").mkdir(exist_ok=True)
    (tmp_path / "connector.yaml").write_text(textwrap.dedent(connector))
    for name, body in (goals if goals is not None else {"customers": GOAL}).items():
        (tmp_path / "goals" / f"{name}.yaml").write_text(textwrap.dedent(body))
    return tmp_path / "connector.yaml"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load.load(path)
    return caught.value.problems


def test_valid_config_resolves_paths_against_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "s3cret-pw")
    monkeypatch.chdir("/")
    config = load.load(deploy(tmp_path))
    assert config.connector.sftp.known_hosts == tmp_path / "keys" / "known_hosts"
    assert config.connector.store.url == f"sqlite:///{tmp_path}/state/connector.db"
    assert config.connector.sftp.auth.password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" in config.secrets()
    assert "s3cret-pw" not in repr(config.connector)
    assert [g.name for g in config.goals] == ["customers"]


def test_unset_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFTP_PASSWORD", raising=False)
    assert problems(deploy(tmp_path)) == [
        "connector.yaml: at sftp.auth.password: environment variable SFTP_PASSWORD is not set"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    bad_goal = GOAL.replace("rule: set", "rule: replace").replace("name: customers\n", "name: customers\ncolour: red\n")
    found = problems(deploy(tmp_path, CONNECTOR.replace("host: sftp.example.com", "host: 1\n  portt: 22"),
                            {"customers": bad_goal, "broken": "kind: import-profiles\nfiles: []\n"}))
    text = "\n".join(found)
    assert "connector.yaml: at sftp.portt: unknown key" in text
    assert "connector.yaml: at sftp.host: Input should be a valid string" in text
    assert "goals/customers.yaml: at colour: unknown key" in text
    assert "goals/customers.yaml: at mappings[0].rule: Input should be 'set'" in text
    assert "goals/broken.yaml: at files: List should have at least 1 item" in text
    assert "goals/broken.yaml: at identifiers: required key is missing" in text


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "sftp-password"
    secret.write_text("from-a-file\n")
    secret.chmod(0o644)
    config = CONNECTOR.replace('password: "${SFTP_PASSWORD}"', f"password_file: {secret}")
    assert problems(deploy(tmp_path, config)) == [
        f"connector.yaml: at sftp.auth.password_file: secret file {secret} is readable by others (mode 644): "
        f"run chmod 600 {secret}"
    ]
    secret.chmod(0o600)
    loaded = load.load(deploy(tmp_path, config))
    assert loaded.connector.sftp.auth.password.get_secret_value() == "from-a-file"


def test_private_key_with_loose_permissions_refuses_to_start(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("not really a key")
    key.chmod(0o640)
    config = CONNECTOR.replace('{method: password, password: "${SFTP_PASSWORD}"}',
                               "{method: key, private_key: keys/id_ed25519}")
    found = problems(deploy(tmp_path, config))
    assert found == [f"connector.yaml: at sftp.auth.private_key: secret file {key} is readable by others "
                     f"(mode 640): run chmod 600 {key}"]


def test_host_keys_must_be_verifiable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    found = problems(deploy(tmp_path, CONNECTOR.replace("  known_hosts: keys/known_hosts\n", "")))
    assert any("give sftp.known_hosts or sftp.host_key_fingerprint" in p for p in found)


def test_duplicate_goal_names_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    found = problems(deploy(tmp_path, goals={"a": GOAL, "b": GOAL}))
    assert found == ["goals/b.yaml: goal name 'customers' is also used by goals/a.yaml"]


def test_goal_name_defaults_to_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    config = load.load(deploy(tmp_path, goals={"crm": GOAL.replace("name: customers\n", "")}))
    assert config.goals[0].name == "crm"


def test_goal_digest_changes_with_the_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    first = load.load(deploy(tmp_path))
    second = load.load(deploy(tmp_path, goals={"customers": GOAL.replace("rule: set", "rule: add")}))
    assert load.goal_digest(first, first.goals[0]) != load.goal_digest(second, second.goals[0])


def test_variable_default_is_used_when_unset_or_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFTP_PASSWORD", raising=False)
    monkeypatch.setenv("SFTP_USER", "")
    monkeypatch.setenv("SFTP_PORT", "2222")
    text = (CONNECTOR.replace('"${SFTP_PASSWORD}"', '"${SFTP_PASSWORD:-pw with } and :-}"')
            .replace("username: acme", "username: ${SFTP_USER:-acme}\n  port: ${SFTP_PORT:-22}")
            .replace("connector.db", "${DB_NAME:-}connector.db"))
    config = load.load(deploy(tmp_path, text))
    sftp = config.connector.sftp
    assert (sftp.username, sftp.port) == ("acme", 2222)
    assert sftp.auth.password.get_secret_value() == "pw with  and :-}"  # the default ends at the first }
    assert config.connector.store.url == f"sqlite:///{tmp_path}/state/connector.db"


@pytest.mark.parametrize("form", ["${SFTP_PASSWORD:?missing}", "${SFTP_PASSWORD:=x}", "${SFTP_PASSWORD-x}",
                                  "${1BAD}", "${SFTP_PASSWORD"])
def test_other_variable_forms_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    found = problems(deploy(tmp_path, CONNECTOR.replace("${SFTP_PASSWORD}", form)))
    assert found == [f"connector.yaml: at sftp.auth.password: {form!r} is not a variable reference this "
                     "configuration understands: write ${NAME} or ${NAME:-default}"]


NOTIFYING = CONNECTOR + """\
notifications:
  webhook:
    url: ${WEBHOOK_URL}
    headers: {Authorization: "Bearer ${WEBHOOK_TOKEN}"}
  email:
    smtp: {host: mail.example.com, password_file: secrets/smtp, from: a@example.com}
    to: [b@example.com]
"""


def test_store_commands_need_only_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SFTP_PASSWORD", "WEBHOOK_URL", "WEBHOOK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    path = deploy(tmp_path, NOTIFYING)
    config = load.load(path, unused=load.STORE_ONLY)
    assert config.connector.store.url == f"sqlite:///{tmp_path}/state/connector.db"
    assert sorted(problems(path)) == [
        "connector.yaml: at notifications.email.smtp.password_file: cannot read secret file "
        f"{tmp_path}/secrets/smtp: No such file or directory",
        "connector.yaml: at notifications.webhook.headers.Authorization: environment variable WEBHOOK_TOKEN "
        "is not set",
        "connector.yaml: at notifications.webhook.url: environment variable WEBHOOK_URL is not set",
        "connector.yaml: at sftp.auth.password: environment variable SFTP_PASSWORD is not set",
    ]


@pytest.mark.parametrize(("url", "problem"), [
    ("nonsense", "not a store URL (it does not start with a scheme and ://): write sqlite:///path/to/file.db or "
                 "postgresql+psycopg://user@host/database"),
    ("mysql://u@h/db", "mysql is not a store this connector can use: write sqlite:///path/to/file.db or "
                       "postgresql+psycopg://user@host/database"),
    ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2 is not a store this connector can use: write "
                                     "sqlite:///path/to/file.db or postgresql+psycopg://user@host/database"),
    ("sqlite://state.db", "a SQLite URL has three slashes before a relative path (sqlite:///state/connector.db) "
                          "and four before an absolute one"),
])
def test_unusable_store_url_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, problem: str) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    found = problems(deploy(tmp_path, CONNECTOR.replace("sqlite:///state/connector.db", url)))
    assert found == [f"connector.yaml: at store.url: {problem}"]


def test_postgresql_without_its_driver_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sftp_connector.config import connector

    monkeypatch.setenv("SFTP_PASSWORD", "x")
    monkeypatch.setattr(connector, "_installed", lambda module: module != "psycopg")  # cannot uninstall it here
    found = problems(deploy(tmp_path, CONNECTOR.replace("sqlite:///state/connector.db", "postgresql://u@h/db")))
    assert found == ["connector.yaml: at store.url: the PostgreSQL driver is not installed: install the "
                     "connector with its postgres extra (pip install 'sftp-connector[postgres]')"]
    monkeypatch.undo()
    monkeypatch.setenv("SFTP_PASSWORD", "x")
    config = load.load(deploy(tmp_path, CONNECTOR.replace("sqlite:///state/connector.db", "postgresql://u@h/db")))
    assert config.connector.store.url == "postgresql://u@h/db"
