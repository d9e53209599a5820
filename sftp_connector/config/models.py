"""Pydantic models for connector.yaml and the goal files; the names are the SPEC's contract.

Paths in these models are already absolute: `config.load` resolves them against the
directory of connector.yaml before validation.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Rule = Literal["set", "set_if_empty", "set_or_clear", "add", "sum"]
RULES: tuple[str, ...] = get_args(Rule)
AuthMethod = Literal["password", "key", "key+password"]
Compression = Literal["auto", "none", "gzip", "bz2", "zip"]
GoalKind = Literal["import-groups", "import-profiles", "export-profiles"]
GOAL_KINDS: tuple[str, ...] = get_args(GoalKind)

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class Model(BaseModel):
    """Base of every config model: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_size(value: int | str) -> int:
    """Given a size such as 10GiB, 500MB or 1024, return it in bytes. Raise ValueError if malformed."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 10GiB or 500MB, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


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
    home: str = "/"
    """The user's directory on the server; relative goal directories are resolved against it."""
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
    state_dir: Path | None = None
    """Temp files and reject files (default: state/ beside connector.yaml)."""


# ── goals/*.yaml ────────────────────────────────────────────────────────────────────


class Link(Model):
    parent: str
    child: str


class FileEntry(Model):
    name: str
    directory: str = "."
    pattern: str | None = None
    """A glob matched against the whole file name, suffixes included."""
    regex: str | None = None
    """A regular expression matched against the whole file name."""
    parent: str | None = None
    link: Link | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> FileEntry:
        if (self.pattern is None) == (self.regex is None):
            raise ValueError(f"file {self.name}: give exactly one of pattern or regex")
        if self.pattern is not None and "/" in self.pattern:
            raise ValueError(f"file {self.name}: a pattern matches file names only; put the folder in `directory`")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"file {self.name}: regex does not compile: {exc}") from exc
        return self


class Csv(Model):
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    columns: list[str] | None = None
    multi_value_separator: str | None = "|"
    null_values: list[str] = [""]
    compression: Compression = "auto"

    @model_validator(mode="after")
    def _columns_without_header(self) -> Csv:
        if not self.header and not self.columns:
            raise ValueError("csv.header: false needs csv.columns")
        if len(self.delimiter) != 1 or len(self.quote) != 1:
            raise ValueError("csv.delimiter and csv.quote must be one character each")
        return self

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value


class MoveTo(Model):
    move_to: str


class Identifier(Model):
    field: str
    property: str


class Mapping(Model):
    field: str
    property: str
    rule: Rule = "set"


class BulkMapping(Model):
    rule: Rule = "set"


class GroupRef(Model):
    """Link the row's profile to the group of `type` whose identifier is the value of `field`."""

    type: str
    field: str
    rule: Literal["set", "add"] = "set"
    """set: the row's groups of this type replace the profile's; add: they are added to them."""


class Nested(Model):
    """A list inside each event, one item per row of a deeper linked file (an order's products)."""

    name: str
    file: str
    properties: dict[str, str]
    """Item property: source field of `file`."""


class EventSpec(Model):
    """Timeline events read from a file of the goal: one event per row of `file` (default: the root)."""

    type: str
    file: str | None = None
    id: str
    """The field holding the event id: (type, id) is unique, so a re-import updates the event."""
    time: str | None = None
    properties: dict[str, str] = {}
    """Event property: source field."""
    nested: list[Nested] = []
    product_store: bool = False
    """Count each nested item with a `sku` in the product table (times bought, last bought)."""


class DeleteWhen(Model):
    field: str
    equals: str


class ImportGoalBase(Model):
    name: str
    enabled: bool = True
    order: int = 0
    files: list[FileEntry] = Field(min_length=1)
    csv: Csv = Csv()
    stable_after_s: float = Field(30, ge=0)
    done_marker: str | None = None
    """Only import x.csv once x.csv.done exists; a value with {name} is a template."""
    after_import: Literal["keep", "delete"] | MoveTo = "keep"
    on_error: Literal["keep"] | MoveTo = "keep"
    max_reject_ratio: float = Field(0.05, ge=0, le=1)
    max_file_bytes: int = Field(10 * 2**30, gt=0)
    processors: list[dict[str, Any]] = []
    prefix: str = ""
    mappings: list[Mapping] = []
    bulk_mapping: BulkMapping | None = None
    write_mode: Literal["append", "overwrite"] = "append"
    """overwrite: each imported file (set) is the whole truth for this goal; what the goal wrote for
    profiles it no longer holds is cleared in the same transaction."""
    max_clear_ratio: float = Field(0.5, ge=0, le=1)
    """overwrite refuses a file that would clear more than this share of the goal's profiles (run --force)."""
    delete_when: DeleteWhen | None = None
    """Rows matching it are erasure requests: the matched profile is erased."""

    _size = field_validator("max_file_bytes", mode="before")(classmethod(lambda cls, v: parse_size(v)))

    @field_validator("done_marker")
    @classmethod
    def _marker_in_the_same_folder(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "/" in value or "\x00" in value:
            raise ValueError("done_marker must name a file in the same directory (no `/`)")
        for _, name, spec, conversion in string.Formatter().parse(value):
            if name is not None and (name not in ("name", "stem") or spec or conversion):
                raise ValueError(f"done_marker: unknown placeholder {{{name}}}; use {{name}} or {{stem}}")
        return value

    @model_validator(mode="after")
    def _files_link_up(self) -> ImportGoalBase:
        names = [entry.name for entry in self.files]
        if len(set(names)) != len(names):
            raise ValueError("files: names must be unique")
        for entry in self.files[1:]:
            if entry.parent is not None and entry.parent not in names:
                raise ValueError(f"file {entry.name}: parent {entry.parent} is not a file of this goal")
            if entry.link is None:
                raise ValueError(f"file {entry.name}: a linked file needs link: {{parent, child}}")
        return self


class ImportProfiles(ImportGoalBase):
    kind: Literal["import-profiles"]
    domain_group: str = "default"
    identifiers: list[Identifier] = Field(min_length=1)
    allow_new_profiles: bool = True
    groups: list[GroupRef] = []
    events: list[EventSpec] = []

    @model_validator(mode="after")
    def _events_name_files(self) -> ImportProfiles:
        root = self.files[0].name
        parents = {entry.name: entry.parent or root for entry in self.files[1:]}
        for event in self.events:
            for file in [event.file, *(n.file for n in event.nested)]:
                if file is not None and file != root and file not in parents:
                    raise ValueError(f"event {event.type}: file {file} is not a file of this goal")
            for nested in event.nested:
                if (event.file or root) not in _ancestors(nested.file, parents):
                    raise ValueError(f"event {event.type}: nested {nested.name} reads {nested.file}, which is not "
                                     f"linked below {event.file or root}")
        return self


def _ancestors(name: str, parents: dict[str, str]) -> list[str]:
    """A file entry and the entries above it, up to the root."""
    chain = [name]
    while chain[-1] in parents and len(chain) <= len(parents):
        chain.append(parents[chain[-1]])
    return chain


class GroupIdentifier(Model):
    field: str


class ImportGroups(ImportGoalBase):
    kind: Literal["import-groups"]
    group_type: str = Field(pattern=r"^[^@.\s][^\s]*$")
    identifier: GroupIdentifier


class ExportCsv(Model):
    delimiter: str = ","
    quote: str = '"'
    header: bool = True
    multi_value_separator: str = "|"
    escape_formulas: bool = False
    """Prefix `'` to values starting with =, +, -, @, tab or CR (not plain numbers), so spreadsheets do not run them."""

    @model_validator(mode="after")
    def _single_characters(self) -> ExportCsv:
        if len(self.delimiter) != 1 or len(self.quote) != 1:
            raise ValueError("csv.delimiter and csv.quote must be one character each")
        return self


class ExportColumn(Model):
    """One column of an export file: exactly one of property, value, segments, text."""

    column: str
    property: str | None = None
    value: Literal["profile_id", "segments", "permission_level"] | None = None
    segments: list[str] | None = None
    """The names of these segments the profile is in (`value: segments`: of every segment)."""
    text: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ExportColumn:
        if sum(x is not None for x in (self.property, self.value, self.segments, self.text)) != 1:
            raise ValueError(f"column {self.column}: give exactly one of property, value, segments, text")
        return self


class ExportEvents(Model):
    types: Literal["all"] | list[str] = "all"
    since_days: float | None = Field(None, ge=0)
    since: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}")


class ExportProfiles(Model):
    kind: Literal["export-profiles"]
    name: str
    enabled: bool = True
    order: int = 0
    segment: str | None = None
    """A segment of connector.yaml; none: every profile."""
    directory: str = "."
    filename: str = "{goal}_{now:%Y%m%dT%H%M%S}_{run}.csv"
    """Placeholders {goal}, {now:<strftime>} (schedule.timezone, else UTC), {run}; ".gpg" is appended when
    encrypting (".asc" when armored)."""
    if_exists: Literal["fail", "overwrite"] = "fail"
    changed_only: bool = True
    export_empty: bool = False
    encrypt: bool | None = None
    """Encrypt to pgp.encrypt.recipients; default: when pgp is enabled and recipients are set."""
    csv: ExportCsv = ExportCsv()
    format: Literal["csv", "parquet"] = "csv"
    """parquet: multi-valued properties as list columns; a `.csv` file name ends in `.parquet` instead."""
    deny_labels: list[str] = []
    """Refuse to export a property carrying one of these labels (connector.yaml `labels`)."""
    columns: list[ExportColumn] = Field(min_length=1)
    events: ExportEvents | None = None

    @field_validator("filename")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        from datetime import UTC, datetime

        try:
            value.format(goal="g", now=datetime.now(UTC), run="r")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"filename: unknown placeholder or bad format ({exc}); use {{goal}}, "
                             "{now:%Y%m%d}, {run}") from exc
        if "/" in value or value in ("", ".", ".."):
            raise ValueError("filename must be a plain file name (the directory goes in `directory`)")
        return value


Goal = Annotated[ImportProfiles | ImportGroups | ExportProfiles, Field(discriminator="kind")]
ImportGoal = ImportProfiles | ImportGroups
