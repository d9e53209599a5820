"""Pydantic models of connector.yaml: connection, keys, store, privacy, schedule, notifications, segments.

Paths are already absolute: `config.load` resolves them against the directory of connector.yaml.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from sftp_connector.config.base import AuthMethod, Model

# ── connector.yaml ──────────────────────────────────────────────────────────────────


class SftpAuth(Model):
    method: AuthMethod = "key"
    """password | key | key+password (the server asks for both)."""
    password: SecretStr | None = None
    private_key: Path | None = None
    """An ed25519, ecdsa or rsa private key file (OpenSSH or PEM format); must be 0600."""
    passphrase: SecretStr | None = None
    """The private key's passphrase, if it has one."""

    @model_validator(mode="after")
    def _needs_what_the_method_says(self) -> SftpAuth:
        if "password" in self.method and self.password is None:
            raise ValueError(f"auth.method {self.method} needs auth.password")
        if "key" in self.method and self.private_key is None:
            raise ValueError(f"auth.method {self.method} needs auth.private_key")
        return self


class Sftp(Model):
    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    auth: SftpAuth
    known_hosts: Path | None = None
    """OpenSSH known_hosts file; required unless host_key_fingerprint is given."""
    host_key_fingerprint: str | None = None
    """Pin the server's key: "SHA256:<base64>" as ssh-keygen -l prints it."""
    home: str = "~"
    """The connector's directory on the server; relative goal directories are resolved against it. `~` (the
    default) is the login directory, as `sftp` starts in; `~/x` and `x` lie below it; `/` is the top of a
    chrooted account."""
    proxy_jump: str | None = None
    timeout_s: float = Field(30, gt=0)
    retries: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _host_key_is_checked(self) -> Sftp:
        if self.known_hosts is None and self.host_key_fingerprint is None:
            raise ValueError("give sftp.known_hosts or sftp.host_key_fingerprint (host keys are always verified)")
        if self.host_key_fingerprint and not self.host_key_fingerprint.startswith("SHA256:"):
            raise ValueError("sftp.host_key_fingerprint must look like SHA256:<base64>")
        return self


class PgpDecrypt(Model):
    private_key: Path | None = None
    passphrase: SecretStr | None = None
    symmetric_passphrase: SecretStr | None = None
    """Decrypts files encrypted with a passphrase only (gpg --symmetric), never the private key's."""
    verify_keys: list[Path] = []
    require_signature_from: list[str] = []


class PgpEncrypt(Model):
    recipients: list[str] = []
    """Public key files or fingerprints."""
    sign: bool = False
    armor: bool = False


class Pgp(Model):
    enabled: bool = True
    gnupg_home: Path | None = None
    """The connector's own GnuPG home (default keys/gnupg), never the user's ~/.gnupg."""
    decrypt: PgpDecrypt = PgpDecrypt()
    encrypt: PgpEncrypt = PgpEncrypt()


class Store(Model):
    url: str = "sqlite:///state/connector.db"
    """sqlite:///path (relative to connector.yaml) or postgresql+psycopg://user@host/db."""
    lock_timeout_s: float = Field(60, gt=0)
    """How long a write waits for another writer's lock (SQLite) before the file fails and is retried."""

    @field_validator("url")
    @classmethod
    def _usable(cls, value: str) -> str:
        """Refuse a URL the store cannot open now, rather than on the first run."""
        scheme, sep, rest = value.partition("://")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+._-]*", scheme):
            # Not echoed: it may hold a password.
            raise ValueError(f"not a store URL (it does not start with a scheme and ://): write {_STORE_URLS}")
        if scheme not in ("sqlite", "postgresql", "postgresql+psycopg"):
            raise ValueError(f"{scheme} is not a store this connector can use: write {_STORE_URLS}")
        if scheme == "sqlite" and not rest.startswith("/"):
            raise ValueError("a SQLite URL has three slashes before a relative path (sqlite:///state/connector.db) "
                             "and four before an absolute one")
        if scheme != "sqlite" and not _installed("psycopg"):
            raise ValueError("the PostgreSQL driver is not installed: install the connector with its postgres "
                             "extra (pip install 'sftp-connector[postgres]')")
        return value


_STORE_URLS = "sqlite:///path/to/file.db or postgresql+psycopg://user@host/database"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Privacy(Model):
    objectives: list[str] = []
    consent_property: str = "consented_objectives"
    permission_property: str = "permission_level"


class WeekdayOfMonth(Model):
    week: Literal["first", "second", "third", "fourth", "last"]
    day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Schedule(Model):
    timezone: str = "UTC"
    every_minutes: float | None = Field(None, gt=0)
    """Minutes between runs (fractions allowed: 0.5 is every 30 seconds)."""
    times_per_day: int | None = Field(None, gt=0, le=1440)
    days_of_week: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    days_of_month: list[Annotated[int, Field(ge=1, le=31)]] | None = None
    weekday_of_month: WeekdayOfMonth | None = None
    at: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @model_validator(mode="after")
    def _exactly_one_form(self) -> Schedule:
        forms = [self.every_minutes, self.times_per_day, self.days_of_week, self.days_of_month,
                 self.weekday_of_month]
        if sum(form is not None for form in forms) > 1:
            raise ValueError("schedule takes exactly one of every_minutes, times_per_day, "
                             "days_of_week, days_of_month, weekday_of_month")
        return self


class Smtp(Model):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field("connector@localhost", alias="from")
    timeout_s: float = Field(30, gt=0)
    """The whole exchange with the server, not each read: past it the email is given up (logged)."""


class EmailNotification(Model):
    to: list[str]
    when: Literal["failure", "always"] = "failure"
    smtp: Smtp = Smtp()


class Webhook(Model):
    url: str
    """An http:// or https:// address that takes a JSON POST (Slack, Mattermost, Teams, your own)."""
    when: Literal["failure", "always"] = "failure"
    """failure: a run that failed or was interrupted; always: every run (dry runs never notify)."""
    headers: dict[str, SecretStr] = {}
    """Extra request headers, e.g. Authorization: "Bearer ${WEBHOOK_TOKEN}"; values are secrets."""
    timeout_s: float = Field(10, gt=0)
    """The whole request and answer, not each read: past it the notification is given up (logged)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+\S*", value):
            # The value is not echoed: chat webhook URLs carry their token in the path.
            raise ValueError("webhook.url must start with http:// or https:// and name a host")
        return value


class Notifications(Model):
    email: EmailNotification | None = None
    webhook: Webhook | None = None
    """POST {"text": one-line summary, "run": the run as `history --json`} to a URL."""


class Condition(Model):
    """One segment condition: exactly one subject (all / any / not / segment / property / group / event)
    with its operators. Several operators on one subject must all hold (for a property: on one value)."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(None, alias="not")
    segment: str | None = None
    """Another named segment."""
    property: str | None = None
    group: str | None = None
    """A group type: the profile belongs to a group of it (`id` / `in` narrow it)."""
    event: str | None = None
    """An event type: the profile did it (within_days / since), or `count` / `sum` of it compare."""
    equals: str | int | float | None = None
    in_: list[str | int | float] | None = Field(None, alias="in")
    not_in: list[str | int | float] | None = None
    exists: bool | None = None
    contains: str | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    before: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}")
    after: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}")
    within_days: float | None = Field(None, ge=0)
    older_than_days: float | None = Field(None, ge=0)
    since: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}")
    id: str | None = None
    count: bool = False
    sum: str | None = None
    """An event property to total (its values read as numbers)."""

    @model_validator(mode="after")
    def _one_subject(self) -> Condition:
        subjects = [k for k in ("all", "any", "not_", "segment", "property", "group", "event")
                    if getattr(self, k) is not None]
        if len(subjects) != 1:
            raise ValueError("a condition takes exactly one of all, any, not, segment, property, group, event")
        subject = subjects[0]
        used = {k for k in _OPERATORS if getattr(self, k) is not None and (k != "count" or self.count)}
        allowed = _ALLOWED.get(subject, set())
        if used - allowed:
            names = ", ".join(sorted(k.rstrip("_") for k in used - allowed))
            raise ValueError(f"{subject.rstrip('_')} conditions do not take {names}")
        if subject == "property" and not used:
            raise ValueError(f"property {self.property}: give an operator (equals, in, exists, contains, gt, …)")
        if subject == "event" and (self.count or self.sum) and not used & {"gt", "gte", "lt", "lte", "equals"}:
            raise ValueError(f"event {self.event}: count or sum needs a comparison (gt, gte, lt, lte, equals)")
        if subject == "event" and self.count and self.sum:
            raise ValueError(f"event {self.event}: give count or sum, not both")
        return self


_OPERATORS = ("equals", "in_", "not_in", "exists", "contains", "gt", "gte", "lt", "lte", "before", "after",
              "within_days", "older_than_days", "since", "id", "count", "sum")
_ALLOWED = {
    "property": {"equals", "in_", "not_in", "exists", "contains", "gt", "gte", "lt", "lte", "before", "after",
                 "within_days", "older_than_days"},
    "group": {"id", "in_"},
    "event": {"within_days", "since", "count", "sum", "gt", "gte", "lt", "lte", "equals"},
}


class ConsoleUser(Model):
    """Who may sign in to the console: a viewer sees (personal data masked), an operator also unmasks and runs."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    role: Literal["viewer", "operator"] = "viewer"
    password_hash: SecretStr | None = None
    """Read from password_hash_file: a line `sftp-connector console --hash-password` prints (scrypt)."""
    token: SecretStr | None = None
    """Read from token_file: a random token (at least 24 characters), typed at sign-in or sent as a bearer token."""

    @model_validator(mode="after")
    def _one_secret(self) -> ConsoleUser:
        if (self.password_hash is None) == (self.token is None):
            raise ValueError(f"console user {self.name} needs exactly one of password_hash_file and token_file")
        if self.password_hash is not None and not self.password_hash.get_secret_value().startswith("scrypt$"):
            raise ValueError(f"console user {self.name}: password_hash_file must hold a hash that "
                             "`sftp-connector console --hash-password` printed, not a password")
        if self.token is not None and len(self.token.get_secret_value()) < 24:
            raise ValueError(f"console user {self.name}: the token is too short (at least 24 characters; "
                             "make one with: openssl rand -hex 32)")
        return self


class Console(Model):
    """The operator console (`sftp-connector console`, `daemon --console-port`)."""

    users: list[ConsoleUser] = []
    """Without users the console serves only 127.0.0.1 and everyone who reaches it is an operator."""
    session_hours: float = Field(12, gt=0, le=24 * 30)


class Connector(Model):
    """connector.yaml: the connection, keys, store, schedule and segments."""

    name: str = "sftp-connector"
    sftp: Sftp
    pgp: Pgp = Pgp()
    store: Store = Store()
    privacy: Privacy = Privacy()
    schedule: Schedule | None = None
    notifications: Notifications = Notifications()
    segments: dict[str, Condition] = {}
    labels: dict[str, list[str]] = {}
    console: Console = Console()
    state_dir: Path | None = None
    """Temp files and reject files (default: state/ beside connector.yaml)."""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: Any) -> Any:
        """A section whose lines are all commented out (YAML null) is the section's default."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None or key in ("schedule",)}
        return data


