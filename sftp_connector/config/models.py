"""Pydantic models of the goal files; connector.yaml's (config/connector.py) are re-exported here, so
`models.X` names every model of the SPEC's contract.

Paths in these models are already absolute: `config.load` resolves them against the
directory of connector.yaml before validation.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sftp_connector.config.base import (  # noqa: F401 - the contract's names, all from here
    GOAL_KINDS,
    RULES,
    AuthMethod,
    Compression,
    GoalKind,
    Model,
    Rule,
    parse_size,
)
from sftp_connector.config.connector import (  # noqa: F401
    Condition,
    Connector,
    EmailNotification,
    Notifications,
    Pgp,
    PgpDecrypt,
    PgpEncrypt,
    Privacy,
    Schedule,
    Sftp,
    SftpAuth,
    Smtp,
    Store,
    Webhook,
    WeekdayOfMonth,
)

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


def group_identity_property(group_type: str) -> str:
    """The property (and identity index key) holding a group's identifier value: `@<type>`."""
    return f"@{group_type}"
