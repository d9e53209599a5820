"""Broken configurations, generated: every one is refused by `sftp-connector validate` with exit code 2, a message
naming the file and the key path, and no traceback.

Hypothesis breaks one thing in a valid deployment (connector.yaml, an import goal or an
export goal): a value of the wrong type, an unknown key, a required key removed, a value
outside an enum, a negative number where only positive ones make sense, or YAML that does
not parse. `validate` runs in-process through typer's CliRunner, so 150 examples take a few
seconds. Gaps found while writing it are kept as strict xfails, so that fixing them shows.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from sftp_connector import cli

Path_ = tuple[str | int, ...]

CONNECTOR: dict[str, Any] = {
    "name": "fuzz",
    "sftp": {"host": "sftp.example.test", "port": 22, "username": "acme",
             "auth": {"method": "key", "private_key": "keys/id_ed25519"},
             "known_hosts": "keys/known_hosts", "home": "/", "timeout_s": 30, "retries": 3},
    "pgp": {"enabled": True, "gnupg_home": "keys/gnupg",
            "decrypt": {"private_key": "keys/connector.private.asc", "passphrase": "${FUZZ_PASSPHRASE}",
                        "verify_keys": ["keys/partner.public.asc"], "require_signature_from": []},
            "encrypt": {"recipients": ["0123456789ABCDEF0123456789ABCDEF01234567"], "sign": False, "armor": False}},
    "store": {"url": "sqlite:///state/connector.db", "lock_timeout_s": 60},
    "privacy": {"objectives": ["marketing"], "consent_property": "consented"},
    "schedule": {"timezone": "UTC", "every_minutes": 60},
    "notifications": {
        "email": {"to": ["ops@example.test"], "when": "failure", "smtp": {"host": "localhost", "port": 25}},
        "webhook": {"url": "https://hooks.example.test/x", "when": "failure", "timeout_s": 10}},
    "segments": {"newsletter": {"property": "newsletter", "equals": "yes"}},
}
IMPORT_GOAL: dict[str, Any] = {
    "kind": "import-profiles", "name": "customers", "order": 0, "enabled": True,
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*.csv"}],
    "csv": {"delimiter": ",", "quote": '"', "encoding": "utf-8", "header": True, "compression": "auto"},
    "stable_after_s": 30, "max_reject_ratio": 0.05, "after_import": "keep", "max_file_bytes": "1GiB",
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": "name", "property": "first_name", "rule": "set"}],
}
EXPORT_GOAL: dict[str, Any] = {
    "kind": "export-profiles", "name": "newsletter", "segment": "newsletter", "directory": "out",
    "if_exists": "fail", "columns": [{"column": "email", "property": "email"}], "csv": {"delimiter": ","},
    "events": {"types": ["order"], "since_days": 30},
}
FILES = {"connector.yaml": CONNECTOR, "goals/customers.yaml": IMPORT_GOAL, "goals/newsletter.yaml": EXPORT_GOAL}

FREE_FORM: set[Path_] = {("segments",)}
"""Mappings whose keys are names the operator chooses, not keys of a model."""
REQUIRED: dict[str, list[Path_]] = {
    "connector.yaml": [("sftp",), ("sftp", "host"), ("sftp", "username"), ("sftp", "auth"),
                       ("sftp", "auth", "private_key"), ("sftp", "known_hosts"), ("notifications", "email", "to"),
                       ("notifications", "webhook", "url"), ("segments", "newsletter", "property")],
    "goals/customers.yaml": [("kind",), ("files",), ("identifiers",), ("files", 0, "name"),
                             ("files", 0, "pattern"), ("identifiers", 0, "field"), ("identifiers", 0, "property"),
                             ("mappings", 0, "field"), ("mappings", 0, "property")],
    "goals/newsletter.yaml": [("kind",), ("columns",), ("columns", 0, "column"), ("columns", 0, "property")],
}
ENUMS: dict[str, list[Path_]] = {
    "connector.yaml": [("sftp", "auth", "method"), ("notifications", "email", "when"),
                       ("notifications", "webhook", "when")],
    "goals/customers.yaml": [("kind",), ("csv", "compression"), ("after_import",), ("mappings", 0, "rule")],
    "goals/newsletter.yaml": [("kind",), ("if_exists",)],
}
ENUM_VALUES = {"password", "key", "key+password", "failure", "always", "auto", "none", "gzip", "bz2", "zip",
               "keep", "delete", "set", "set_if_empty", "set_or_clear", "add", "sum", "fail", "overwrite",
               "import-profiles", "import-groups", "export-profiles"}
POSITIVE: dict[str, list[Path_]] = {
    "connector.yaml": [("sftp", "port"), ("sftp", "timeout_s"), ("sftp", "retries"), ("store", "lock_timeout_s"),
                       ("schedule", "every_minutes"), ("notifications", "webhook", "timeout_s")],
    "goals/customers.yaml": [("stable_after_s",), ("max_reject_ratio",)],
    "goals/newsletter.yaml": [("events", "since_days")],
}
KEY_NAME = st.from_regex(r"x_[a-z][a-z0-9_]{0,8}", fullmatch=True)  # no real key starts with x_


# ── the deployment and the command ───────────────────────────────────────────────────


KNOWN_HOSTS = "sftp.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbAI5Gfmu3c2UXbiq39sEj5Km0fctqXjiCXCyncSeTd\n"


def deployment(base: Path, files: dict[str, Any]) -> Path:
    """Given a folder and {file: YAML text or data}, write a deployment there; return its connector.yaml."""
    (base / "goals").mkdir()
    (base / "keys").mkdir(mode=0o700)
    for name in ("id_ed25519", "connector.private.asc", "partner.public.asc"):
        (base / "keys" / name).write_text("not read by validate\n")
        (base / "keys" / name).chmod(0o600)
    (base / "keys" / "known_hosts").write_text(KNOWN_HOSTS)  # validate checks its lines
    for name, content in files.items():
        (base / name).write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return base / "connector.yaml"


@contextmanager
def logging_kept() -> Iterator[None]:
    """The CLI replaces the root logger's handlers with its own on stderr: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def validate(config: Path) -> Result:
    with logging_kept():
        return CliRunner().invoke(cli.app, ["--config", str(config), "validate"], env={"FUZZ_PASSPHRASE": "pw"})


def problems(result: Result, file: str) -> list[str]:
    """Given validate's result, return its problem lines about file (after "invalid configuration:")."""
    return [line.strip() for line in result.output.splitlines() if line.strip().startswith(f"{file}: ")]


def rendered(path: Path_) -> str:
    """Given a key path, return it as the messages write it: sftp.auth.method, files[0].name."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def related(named: str, mutated: str) -> bool:
    """A message's key path names the mutation if it is the mutated key, above it, or below it."""
    return any(a == b or a.startswith(b + ".") or a.startswith(b + "[") for a, b in ((named, mutated),
                                                                                    (mutated, named)))


# ── mutations ────────────────────────────────────────────────────────────────────────


def nodes(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Given parsed YAML, yield every (key path, value) below the top."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        yield (*path, key), child
        yield from nodes(child, (*path, key))


def at(data: Any, path: Path_) -> tuple[Any, str | int]:
    """Given parsed YAML and a key path, return the container of its last key, and that key."""
    for key in path[:-1]:
        data = data[key]
    return data, path[-1]


@st.composite
def broken(draw: st.DrawFn) -> tuple[str, dict[str, Any], str | None]:
    """Draw (mutated file, the deployment's files, the key path the message must name or None for YAML)."""
    file = draw(st.sampled_from(sorted(FILES)))
    data = copy.deepcopy(FILES[file])
    kind = draw(st.sampled_from(["wrong_type", "unknown_key", "missing", "bad_enum", "negative", "not_yaml"]))
    event(f"{kind} in {file}")
    path: Path_ = ()
    if kind == "wrong_type":
        path, value = draw(st.sampled_from(list(nodes(data))))
        foreign = ([1, 2], 7, "text") if isinstance(value, dict) else ({"x": 1}, 7, "text") if isinstance(
            value, list) else ({"x": 1}, [1, 2])
        container, key = at(data, path)
        container[key] = draw(st.sampled_from(foreign))
    elif kind == "unknown_key":
        models = [p for p, v in nodes(data) if isinstance(v, dict) and p not in FREE_FORM]
        parent = draw(st.sampled_from([(), *models]))
        key = draw(KEY_NAME)
        (data if not parent else at(data, parent)[0][parent[-1]])[key] = draw(st.sampled_from([1, "x", [], {}]))
        path = (*parent, key)
    elif kind == "missing":
        path = draw(st.sampled_from(REQUIRED[file]))
        container, key = at(data, path)
        del container[key]
    elif kind == "bad_enum":
        path = draw(st.sampled_from(ENUMS[file]))
        container, key = at(data, path)
        container[key] = draw(st.from_regex(r"[a-z][a-z+_-]{0,11}", fullmatch=True).filter(
            lambda v: v not in ENUM_VALUES))
    elif kind == "negative":
        path = draw(st.sampled_from(POSITIVE[file]))
        container, key = at(data, path)
        container[key] = draw(st.integers(max_value=-1) | st.floats(max_value=-1e-6, allow_nan=False,
                                                                     allow_infinity=False))
    else:
        return file, {**FILES, file: _not_yaml(draw, yaml.safe_dump(data, sort_keys=False))}, None
    return file, {**FILES, file: data}, rendered(path)


def _not_yaml(draw: st.DrawFn, text: str) -> str:
    """Given valid YAML, return it broken so that it does not parse or is not a mapping (assumed)."""
    lines = text.splitlines()
    where = draw(st.integers(0, len(lines)))
    damage = draw(st.sampled_from(["key: [unclosed", '"unclosed: quote', "\tindented: with a tab", "- a list item",
                                   "{a: b", "key: value: another", "  : nothing", "*undefined_alias", "]"]))
    broken_text = "\n".join([*lines[:where], damage, *lines[where:]]) + "\n"
    if draw(st.booleans()):
        broken_text = draw(st.sampled_from(["", "just a string\n", "- a\n- list\n", "42\n", "null\n"]))
    try:
        parsed = yaml.safe_load(broken_text)
    except yaml.YAMLError:
        return broken_text
    assume(not isinstance(parsed, dict))
    return broken_text


# ── tests ────────────────────────────────────────────────────────────────────────────


def test_the_unbroken_deployment_is_valid(tmp_path: Path) -> None:
    result = validate(deployment(tmp_path, FILES))
    assert result.exit_code == 0, result.output
    assert "configuration OK: 2 goal(s)" in result.output


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken())
def test_every_broken_config_is_refused_with_file_and_key_path(case: tuple[str, dict[str, Any], str | None]) -> None:
    file, files, path = case
    with tempfile.TemporaryDirectory() as base:
        result = validate(deployment(Path(base), files))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.output.startswith("invalid configuration:\n"), result.output
    found = problems(result, file)
    assert found, result.output
    if path is None:
        assert any(": not valid YAML: " in p or p.endswith(": expected a mapping at the top level")
                   for p in found), found
        return
    named = [p.split(": at ", 1)[1].split(": ", 1)[0] for p in found if ": at " in p]
    expected = "top level" if path == "kind" else path  # a goal's kind picks its model: no model, no key path
    assert any(related(n, expected) or (path == "kind" and n == "kind") for n in named), (path, found)


@pytest.mark.parametrize(("file", "path", "value"), [
    pytest.param("goals/customers.yaml", ("max_file_bytes",), -1, id="negative-max_file_bytes"),
    pytest.param("goals/customers.yaml", ("max_file_bytes",), {"x": 1}, id="mapping-max_file_bytes"),
    pytest.param("goals/customers.yaml", ("max_file_bytes",), True, id="boolean-max_file_bytes"),
    pytest.param("connector.yaml", ("notifications", "email", "smtp", "port"), -25, id="negative-smtp-port"),
    pytest.param("goals/customers.yaml", ("files", 0, "pattern"), "../*.csv", id="pattern-with-a-slash"),
    pytest.param("goals/customers.yaml", ("done_marker",), "../{name}.done", id="done_marker-with-a-slash"),
])
def test_known_gaps_are_refused(tmp_path: Path, file: str, path: Path_, value: Any) -> None:
    data = copy.deepcopy(FILES[file])
    container, key = at(data, path) if len(path) > 1 else (data, path[0])
    container[key] = value
    result = validate(deployment(tmp_path, {**FILES, file: data}))
    assert result.exit_code == 2, result.output


def test_secret_files_names_the_chmod_and_the_chown(tmp_path: Path) -> None:
    config = deployment(tmp_path, FILES)
    key = tmp_path / "keys" / "id_ed25519"
    key.chmod(0o644)
    passphrase = tmp_path / "keys" / "pgp_passphrase"
    passphrase.write_text("pw\n")
    passphrase.chmod(0o600)
    os.chown(passphrase, 65534, 65534)  # nobody's: readable to root, but not the connector's own
    connector = copy.deepcopy(CONNECTOR)
    connector["pgp"]["decrypt"] = {**connector["pgp"]["decrypt"], "passphrase_file": "keys/pgp_passphrase"}
    del connector["pgp"]["decrypt"]["passphrase"]
    config.write_text(yaml.safe_dump(connector))
    result = validate(config)
    assert result.exit_code == 2
    assert problems(result, "connector.yaml") == [
        f"connector.yaml: at pgp.decrypt.passphrase_file: secret file {passphrase} is not owned by the user running "
        "the connector: chown it",
        f"connector.yaml: at sftp.auth.private_key: secret file {key} is readable by others (mode 644): run chmod 600 "
        f"{key}",
    ]
