"""What merging a file needs besides its rows: the goal's context, the mappings, the per-file state.

Pure: nothing here reads or writes the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sftp_connector.config import models
from sftp_connector.errors import InputError, RowReject
from sftp_connector.results import Counts
from sftp_connector.rowkeys import Occurrences
from sftp_connector.store import queries


def field_col(field: str) -> str:
    """The working-frame column of a CSV field (namespaced: a field may share a property's name)."""
    return f"f\x1f{field}"


def prop_col(prop: str) -> str:
    """The working-frame column of a property."""
    return f"p\x1f{prop}"


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """One column of the file written to one property by one rule: a goal's mapping, its prefix applied, or
    one column of its bulk mapping (config's `Mapping` is the YAML entry it comes from)."""

    field: str
    property: str
    rule: models.Rule


@dataclass(frozen=True, slots=True)
class Settings:
    """What merging a file (or one level of a linked set) needs to know besides its rows."""

    goal: models.ImportGoal
    label: str
    separator: str | None
    digest: str
    indexed: frozenset[str]
    """Every identifier property of every goal: their values are kept in the identity index."""
    identifiers: tuple[tuple[str, str], ...]
    """(field, property) pairs, tried in order."""
    allow_new: bool = True
    level: frozenset[str] | None = None
    """Of a linked set, the fields of the file being merged: only their mappings apply (None: a lone file)."""
    groups: tuple[models.GroupRef, ...] = ()
    entity: queries.Entity = queries.PROFILES
    group_type: str | None = None
    """For an import-groups goal, the type of the groups it writes."""
    objectives: tuple[str, ...] = ()
    consent_property: str = "consented_objectives"


def context(
    goal: models.ImportGoal, *, label: str, digest: str, indexed: frozenset[str],
    privacy: models.Privacy, level: frozenset[str] | None = None, root: bool = True,
) -> Settings:
    """Given an import goal and the file being merged, return its merge settings.

    A group's identifier value is kept as its property `@<type>`; rows of a linked file below
    the root never create profiles (their root row did) and carry no group links.
    """
    separator = goal.csv.multi_value_separator
    if isinstance(goal, models.ImportGroups):
        prop = models.group_identity_property(goal.group_type)
        return Settings(goal, label, separator, digest, indexed, level=level,
                       identifiers=((goal.identifier.field, prop),), allow_new=root,
                       entity=queries.GROUPS, group_type=goal.group_type)
    return Settings(goal, label, separator, digest, indexed, level=level,
                   identifiers=tuple((i.field, i.property) for i in goal.identifiers),
                   allow_new=goal.allow_new_profiles and root, groups=tuple(goal.groups) if root else (),
                   objectives=tuple(privacy.objectives), consent_property=privacy.consent_property)



@dataclass(slots=True)
class FileMerge:
    """One file's merge across its batches: what it carries between them and what it counted.

    The pipeline's writer thread alone sets `last`, `touched`, `created` and `first_created`
    and appends to `present`; read them once the pipeline is flushed.
    """

    settings: Settings
    maps: list[ColumnRule]
    file_id: int
    previous: pl.DataFrame | None
    """The rows remembered from the file's earlier import (key, hash, profile_id, sums, _h: key hash), sorted by
    key hash, if any."""
    columns: dict[str, str]
    """The profile column of every property a batch reads or writes."""
    now: float
    counts: Counts = field(default_factory=Counts)
    rejects: list[RowReject] = field(default_factory=list)
    last: list[int] = field(default_factory=list)
    occurrences: Occurrences = field(default_factory=Occurrences)
    touched: list[pl.Series] = field(default_factory=list)
    """The profile ids each batch applied rows to (8 bytes a row), for the goal's set of profiles."""
    known_before: dict[str, bool] = field(default_factory=dict)
    """Whether the store held values of each identifier property before this file."""
    added: dict[str, pl.Series] = field(default_factory=dict)
    """Short hashes of the identifier values this file added to the index, by property, sorted: a prefilter
    (4 bytes a value; a collision only costs a lookup that finds nothing)."""
    present: list[pl.Series] = field(default_factory=list)
    """The profiles of the file's rows, applied or unchanged (what an overwrite keeps)."""
    created: int = 0
    first_created: int | None = None
    """The first profile id this file created: every id it created is from there on."""
    changed: pl.Series = field(default_factory=lambda: pl.Series("pid", [], dtype=pl.Int64))
    """The stored profiles a batch changed, sorted and distinct (for the count of updated profiles)."""
    new_columns: bool = False
    """Whether the file added profile columns (in its transaction: other connections do not see them)."""

    @property
    def identifiers(self) -> list[tuple[str, str]]:
        return list(self.settings.identifiers)

    @property
    def props(self) -> list[str]:
        """The properties a batch reads and may write: mapped, identifier and consent properties."""
        names = [m.property for m in self.maps] + [p for _, p in self.identifiers]
        return list(dict.fromkeys(names + ([self.settings.consent_property] if self.settings.objectives else [])))

    @property
    def indexed_props(self) -> list[str]:
        """The properties of `props` kept in the identity index."""
        return [p for p in self.props if p in self.settings.indexed]

    @property
    def sum_props(self) -> set[str]:
        return {m.property for m in self.maps if m.rule == "sum"}


def mappings(
    goal: models.ImportGoal, columns: list[str], level: frozenset[str] | None = None
) -> list[ColumnRule]:
    """Given a goal and the file's columns, return its mappings with prefix and bulk mapping applied.

    With `level` (a linked set's file), only mappings of that file's fields; bulk mapping
    covers the root file only. Raise InputError if a mapped or identifier field is not a
    column of the file, or a property is mapped with `sum` and another rule.
    """
    ids = [i.field for i in goal.identifiers] if isinstance(goal, models.ImportProfiles) else [goal.identifier.field]
    explicit = [ColumnRule(m.field, goal.prefix + m.property, m.rule) for m in goal.mappings
                if level is None or m.field in level]
    missing = [f for f in [*ids, *(m.field for m in explicit)] if f not in columns]
    if missing:
        raise InputError(f"field(s) {', '.join(dict.fromkeys(missing))} not in the file "
                         f"(columns: {', '.join(c for c in columns if c != '_row')})")
    if goal.bulk_mapping is not None:
        taken = {m.field for m in goal.mappings} | set(ids)
        if isinstance(goal, models.ImportProfiles):
            taken |= {g.field for g in goal.groups}
        explicit += [ColumnRule(c, goal.prefix + c, goal.bulk_mapping.rule) for c in columns
                     if c not in taken and not c.startswith("_") and (level is None or c in level)]
    _check_sums_alone(explicit)
    return explicit


def _check_sums_alone(maps: list[ColumnRule]) -> None:
    """Raise InputError if a property is mapped with `sum` and with another rule (a sum holds one number)."""
    sums = {m.property for m in maps if m.rule == "sum"}
    mixed = sorted({m.property for m in maps if m.rule != "sum" and m.property in sums})
    if mixed:
        raise InputError(f"property {', '.join(mixed)} is mapped with `sum` and with another rule: a `sum` "
                         "property holds one number; map it with `sum` only")
