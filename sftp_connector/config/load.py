"""Turn connector.yaml and goals/*.yaml into validated models, reporting every problem at once.

YAML → `${ENV}` → `*_file` secrets → models → paths relative to connector.yaml → 0600 checks.
Each problem is prefixed with its file and key path: "goals/x.yaml: at files[1].link: …".
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from sftp_connector import processors
from sftp_connector.config import models
from sftp_connector.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_REFERENCE = re.compile(r"\$\{[^}]*\}?")
"""Anything that starts like a variable reference: what _ENV does not match is refused, not kept as text."""
MAX_YAML_BYTES = 16 << 20
"""A configuration file is read only up to this size: a goal of thousands of mappings is a few hundred KB."""
MAX_YAML_VALUES = 1_000_000
"""Values (strings, numbers, list and mapping entries) a file may expand to, aliases expanded."""
_SECRET_KEYS = ("password", "passphrase", "symmetric_passphrase", "password_hash", "token")
DEFAULT_GNUPG_HOME = Path("keys", "gnupg")
"""The connector's GnuPG home unless pgp.gnupg_home says otherwise, relative to connector.yaml."""
STORE_ONLY = frozenset({"sftp", "pgp", "notifications", "console"})
"""The sections of connector.yaml that commands reading only the store (history, dumps) do not use."""
KEYS_ONLY = frozenset({"sftp", "notifications", "store", "console"})
"""The sections the `keys` commands do not use."""
_LENIENT = STORE_ONLY | KEYS_ONLY
_GOAL = TypeAdapter(models.Goal)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration of one deployment."""

    path: Path
    connector: models.Connector
    goals: tuple[models.ImportProfiles | models.ImportGroups | models.ExportProfiles, ...]
    goal_files: dict[str, Path]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return self.connector.state_dir or self.base_dir / "state"

    @property
    def gnupg_home(self) -> Path:
        """The connector's own GnuPG home: pgp.gnupg_home, by default keys/gnupg beside connector.yaml."""
        return self.connector.pgp.gnupg_home or self.base_dir / DEFAULT_GNUPG_HOME

    def goal(self, name: str) -> models.ImportProfiles | models.ImportGroups | models.ExportProfiles:
        """Given a goal name, return its model. Raise ConfigError if there is no such goal."""
        for goal in self.goals:
            if goal.name == name:
                return goal
        raise ConfigError(f"no goal named {name!r} (goals: {', '.join(g.name for g in self.goals)})")

    def secrets(self) -> list[str]:
        """Return every secret value of the configuration, for the log redaction filter."""
        found: list[str] = []
        _collect_secrets(self.connector, found)
        return [value for value in found if value]


def load(path: Path, *, unused: frozenset[str] = frozenset()) -> Config:
    """Given the path of connector.yaml, return the validated Config with its goals. `unused` names sections
    of connector.yaml the command does not use (STORE_ONLY, KEYS_ONLY): their unset variables, unreadable
    secret files and invalid values are not problems, and such a section is kept as written.

    Raise ConfigError listing every problem found (file, key path, what is expected).
    """
    assert unused <= _LENIENT
    path = path.resolve()
    problems: list[str] = []
    at = _Where(path.name, path.parent, problems)
    raw = _read_yaml(path, problems, at=at)
    if isinstance(raw, dict):
        raw = {key: _as_written(key, value, at) if key in unused else value for key, value in raw.items()}
    connector = _validate(models.Connector, raw, path.name, problems, unresolved=at.unresolved) \
        if raw is not None else None
    if connector is not None:
        connector = _resolve_paths(connector, path.parent, unused)
        _check_secret_files(connector, path.name, problems, unused)
    goals, goal_files = _load_goals(path.parent / "goals", problems)
    if connector is not None:
        problems += _segment_problems(connector, goals, goal_files)
        problems += [f"goals/{goal_files[g.name].name}: {problem}" for g in goals
                     if isinstance(g, models.ExportProfiles) for problem in denied_columns(connector, g)]
    if problems or connector is None:
        raise ConfigError(problems or [f"{path}: could not be read"])
    return Config(path=path, connector=connector, goals=tuple(goals), goal_files=goal_files)


def goal_digest(config: Config, goal: models.ImportProfiles | models.ImportGroups | models.ExportProfiles) -> str:
    """Given a goal, return a digest of everything in its configuration that shapes its result."""
    payload = {"goal": goal.model_dump(mode="json"), "privacy": config.connector.privacy.model_dump()}
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _read_yaml(path: Path, problems: list[str], label: str | None = None, at: _Where | None = None) -> Any:
    label = label or path.name
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_YAML_BYTES + 1)
        text = raw.decode("utf-8")
    except OSError as exc:
        problems.append(f"{label}: cannot read: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        problems.append(f"{label}: not UTF-8 text (byte {exc.start})")
        return None
    if len(raw) > MAX_YAML_BYTES:
        problems.append(f"{label}: larger than {MAX_YAML_BYTES >> 20} MiB: not a configuration file")
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problems.append(f"{label}: not valid YAML: {exc}")
        return None
    except RecursionError:
        problems.append(f"{label}: the YAML is nested too deeply: refused")
        return None
    if not isinstance(data, dict):
        problems.append(f"{label}: expected a mapping at the top level")
        return None
    problem = _unbounded(data)
    if problem:
        problems.append(f"{label}: {problem}: refused")
        return None
    return _expand(data, at or _Where(label, path.parent, problems), "")


def _unbounded(data: Any) -> str | None:
    """Given parsed YAML, return why expanding it would not end or not fit, or None.

    YAML aliases share one object however often they repeat, and a few hundred bytes of
    aliases of aliases stand for billions of values; `_expand` copies each occurrence. So the
    values are counted as expanded, each shared object once (its count remembered), before
    anything is copied; an alias inside its own anchor would never end.
    """
    counted: dict[int, int] = {}
    open_: set[int] = set()

    def count(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in counted:
            return counted[key]
        if key in open_:
            raise _Cycle
        open_.add(key)
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += count(item)
            if total > MAX_YAML_VALUES:
                break
        open_.discard(key)
        counted[key] = total
        return total

    try:
        if count(data) > MAX_YAML_VALUES:
            return f"the YAML expands to more than {MAX_YAML_VALUES:,} values (an alias repeated within aliases?)"
    except _Cycle:
        return "the YAML refers to itself (an alias inside its own anchor)"
    except RecursionError:
        return "the YAML is nested too deeply"
    return None


class _Cycle(Exception):
    """An alias met inside its own anchor."""


@dataclass(frozen=True, slots=True)
class _Where:
    """The file being expanded: its label for messages, the config directory, the problem list, and the key
    paths whose variable or secret file could not be read (with the problem each made)."""

    label: str
    base: Path
    problems: list[str]
    unresolved: dict[str, str] = field(default_factory=dict)

    def cannot_read(self, where: str, problem: str) -> None:
        self.problems.append(f"{self.label}: at {where}: {problem}")
        self.unresolved[where] = self.problems[-1]


def _as_written(section: str, value: Any, at: _Where) -> Any:
    """Given a section of connector.yaml the command does not use, return it as its model if it is valid, or
    unvalidated (never read) if not; its unread variables and secret files are no longer problems."""
    model = models.Connector.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    for where, problem in list(at.unresolved.items()):
        if where == section or where.startswith((f"{section}.", f"{section}[")):
            at.problems.remove(problem)
            del at.unresolved[where]
    try:
        return model.model_validate(value)
    except ValidationError:
        return model.model_construct(**value) if isinstance(value, dict) else model.model_construct()


def _expand(value: Any, at: _Where, where: str) -> Any:
    """Replace ${VAR} in strings and read `<name>_file` secrets, recursively."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            here = f"{where}.{key}" if where else key
            if key.endswith("_file") and key[:-5] in _SECRET_KEYS:
                secret = Path(str(_expand(item, at, here)))
                out[key[:-5]] = _read_secret_file(at.base / secret, at, here)
            else:
                out[key] = _expand(item, at, here)
        return out
    if isinstance(value, list):
        return [_expand(item, at, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):
        return _substituted(value, at, where)
    return value


def _substituted(text: str, at: _Where, where: str) -> str:
    """Given a string, replace each ${NAME} by the variable's value and each ${NAME:-default} by the value,
    or the default when the variable is unset or empty (as the shell does). Any other `${` form is a problem:
    kept as text, it would reach a server as a password."""
    for reference in _REFERENCE.findall(text):
        if not _ENV.fullmatch(reference):
            at.problems.append(f"{at.label}: at {where}: {reference!r} is not a variable reference this "
                               "configuration understands: write ${NAME} or ${NAME:-default}")
            return text

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if default is not None:
            return os.environ.get(name) or default[2:]
        if name not in os.environ:
            at.cannot_read(where, f"environment variable {name} is not set")
            return ""
        return os.environ[name]

    return _ENV.sub(value, text)


def _read_secret_file(path: Path, at: _Where, where: str) -> str:
    """Return the secret in the file; on a problem, record it and return "" so validation adds no noise."""
    problem = _loose_permissions(path)
    if problem:
        at.cannot_read(where, problem)
        return ""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        at.cannot_read(where, f"cannot read secret file {path}: {exc.strerror or exc}")
        return ""


def _loose_permissions(path: Path) -> str | None:
    """Given a secret file, return what is wrong with its permissions, or None if it is private."""
    try:
        info = path.stat()
    except OSError as exc:
        return f"cannot read secret file {path}: {exc.strerror or exc}"
    if stat.S_IMODE(info.st_mode) & 0o077:
        return (f"secret file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}): "
                f"run chmod 600 {path}")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"secret file {path} is not owned by the user running the connector: chown it"
    return None


def _validate(model: Any, raw: Any, label: str, problems: list[str], unresolved: Collection[str] = ()) -> Any:
    """Validate raw against the model; on errors, add them to problems (not those at a key whose variable or
    secret file could not be read: that is said already) and return None."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(raw)
        return model.model_validate(raw)
    except ValidationError as exc:
        found = [f"{label}: {_describe(error)}" for error in exc.errors()]
        problems.extend(p for p in found if p.split(": ", 2)[1].removeprefix("at ") not in unresolved)
        return None


def _describe(error: Any) -> str:
    """Given one pydantic error, return "at a.b[1].c: what is wrong"."""
    parts: list[str] = []
    for item in error["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in models.GOAL_KINDS or "[" in str(item) or "function-" in str(item):
            continue  # pydantic's union-branch tags, not keys the operator wrote
        else:
            parts.append(f".{item}" if parts else str(item))
    where = "".join(parts) or "top level"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"at {where}: {message}"


def _load_goals(directory: Path, problems: list[str]) -> tuple[list[Any], dict[str, Path]]:
    goals: list[Any] = []
    files: dict[str, Path] = {}
    for file in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        label = f"goals/{file.name}"
        raw = _read_yaml(file, problems, label)
        if raw is None:
            continue
        raw.setdefault("name", file.stem)
        goal = _validate(_GOAL, raw, label, problems)
        if goal is None:
            continue
        if goal.name in files:
            problems.append(f"{label}: goal name {goal.name!r} is also used by goals/{files[goal.name].name}")
            continue
        if isinstance(goal, models.ImportGoalBase):
            problems += [f"{label}: {problem}" for problem in _processor_problems(goal)]
        goals.append(goal)
        files[goal.name] = file
    return goals, files


def denied_columns(connector: models.Connector, goal: models.ExportProfiles) -> list[str]:
    """Given an export goal, return a problem for each column that reads a property labelled with one of the
    goal's deny_labels (connector.yaml `labels`)."""
    problems = []
    for column in goal.columns:
        prop = connector.privacy.permission_property if column.value == "permission_level" else column.property
        for label in connector.labels.get(prop or "", []):
            if label in goal.deny_labels:
                problems.append(f"export goal {goal.name}: column {column.column} reads property {prop}, labelled "
                                f"{label}, which its deny_labels refuse")
    return problems


def _segment_problems(connector: models.Connector, goals: list[Any], files: dict[str, Path]) -> list[str]:
    """Every reference to a segment must name one, and no segment may reach itself."""
    known = set(connector.segments)
    problems = []
    for name, condition in connector.segments.items():
        for ref in _references(condition):
            if ref not in known:
                problems.append(f"connector.yaml: at segments.{name}: segment {ref!r} is not defined")
        if _reaches(connector.segments, name, name, set()):
            problems.append(f"connector.yaml: at segments.{name}: the segment refers to itself")
    for goal in goals:
        if not isinstance(goal, models.ExportProfiles):
            continue
        wanted = [goal.segment] if goal.segment else []
        wanted += [n for column in goal.columns for n in column.segments or []]
        problems += [f"goals/{files[goal.name].name}: segment {n!r} is not defined in connector.yaml "
                     f"(segments: {', '.join(known) or 'none'})" for n in dict.fromkeys(wanted) if n not in known]
    return problems


def _references(condition: models.Condition) -> list[str]:
    """The segment names a condition refers to, at any depth."""
    found = [condition.segment] if condition.segment else []
    for child in [*(condition.all or []), *(condition.any or []), *([condition.not_] if condition.not_ else [])]:
        found += _references(child)
    return found


def _reaches(segments: dict[str, models.Condition], start: str, target: str, seen: set[str]) -> bool:
    for ref in _references(segments.get(start) or models.Condition(all=[])):
        if ref == target:
            return True
        if ref not in seen and ref in segments:
            seen.add(ref)
            if _reaches(segments, ref, target, seen):
                return True
    return False


def _processor_problems(goal: models.ImportGoalBase) -> list[str]:
    """Build the goal's processors once, so that an unknown type or bad option stops the run before it starts."""
    if not goal.processors:
        return []
    try:
        processors.build(goal.processors)
    except ConfigError as exc:
        return exc.problems
    return []


def _resolve_paths(connector: models.Connector, base: Path, unused: frozenset[str]) -> models.Connector:
    """Given a validated connector, return it with local paths made absolute against base (not in the
    sections the command does not use: they may not be valid)."""

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else (path if path.is_absolute() else base / path)

    sftp, pgp, store = connector.sftp, connector.pgp, connector.store
    update: dict[str, Any] = {"state_dir": absolute(connector.state_dir) or base / "state"}
    if "sftp" not in unused:
        update["sftp"] = sftp.model_copy(update={
            "known_hosts": absolute(sftp.known_hosts),
            "auth": sftp.auth.model_copy(update={"private_key": absolute(sftp.auth.private_key)}),
        })
    if "pgp" not in unused:
        update["pgp"] = pgp.model_copy(update={
            "gnupg_home": absolute(pgp.gnupg_home) or base / DEFAULT_GNUPG_HOME,
            "decrypt": pgp.decrypt.model_copy(update={
                "private_key": absolute(pgp.decrypt.private_key),
                "verify_keys": [absolute(p) for p in pgp.decrypt.verify_keys],
            }),
            "encrypt": pgp.encrypt.model_copy(update={
                "recipients": [_recipient(r, base) for r in pgp.encrypt.recipients],
            }),
        })
    if "store" not in unused:
        update["store"] = store.model_copy(update={"url": _store_url(store.url, base)})
    return connector.model_copy(update=update)


def _recipient(value: str, base: Path) -> str:
    """A recipient that is not a fingerprint is a key file, relative to the config directory."""
    if re.fullmatch(r"(0x)?[0-9A-Fa-f]{16,40}", value.replace(" ", "")):
        return value
    return str(Path(value) if Path(value).is_absolute() else base / value)


def _store_url(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(base / url[len(prefix):])
    return url


def _check_secret_files(connector: models.Connector, label: str, problems: list[str], unused: frozenset[str]) -> None:
    for where, key in (("sftp.auth.private_key", lambda: connector.sftp.auth.private_key),
                       ("pgp.decrypt.private_key", lambda: connector.pgp.decrypt.private_key)):
        if where.split(".")[0] not in unused and (path := key()) is not None:
            problem = _loose_permissions(path)
            if problem:
                problems.append(f"{label}: at {where}: {problem}")


def _collect_secrets(value: Any, found: list[str]) -> None:
    from pydantic import BaseModel, SecretStr

    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_secrets(getattr(value, name), found)
    elif isinstance(value, dict | list | tuple):
        for item in value.values() if isinstance(value, dict) else value:
            _collect_secrets(item, found)
