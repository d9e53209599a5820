"""Configuration that would expand without bound is refused, quickly, with a clear error (issue 18, item 3):
a YAML alias bomb (a list of nine aliases of a list of nine aliases…, 9^9 values from a few hundred bytes),
in connector.yaml or in a goal; a self-referencing alias; and a configuration file too large to be one.
`validate` and `run` both refuse it with exit 2 and no traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftp_connector.config import load
from sftp_connector.errors import ConfigError

CONNECTOR = """\
name: bombed
sftp: {host: 127.0.0.1, username: acme, auth: {method: key, private_key: keys/id}, known_hosts: keys/known_hosts}
pgp: {enabled: false}
"""
GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "*.csv"}]
identifiers: [{field: email, property: email}]
"""


def alias_bomb(levels: int = 9) -> str:
    """YAML of a few hundred bytes whose aliases expand to 9**levels strings."""
    lines = ['x-l0: &l0 ["${HOME}", "b", "c", "d", "e", "f", "g", "h", "i"]']
    for level in range(1, levels):
        lines.append(f"x-l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def deployment(base: Path, connector: str, goal: str = GOAL) -> Path:
    (base / "goals").mkdir()
    (base / "keys").mkdir(mode=0o700)
    for name in ("id", "known_hosts"):
        (base / "keys" / name).write_text("x\n")
        (base / "keys" / name).chmod(0o600)
    (base / "goals" / "customers.yaml").write_text(goal)
    (base / "connector.yaml").write_text(connector)
    return base / "connector.yaml"


@pytest.mark.parametrize("where", ["connector.yaml", "goals/customers.yaml"])
def test_an_alias_bomb_is_refused_in_under_a_second(tmp_path: Path, where: str) -> None:
    bomb = alias_bomb()
    config = deployment(tmp_path, CONNECTOR + bomb if where == "connector.yaml" else CONNECTOR,
                        GOAL + bomb if where != "connector.yaml" else GOAL)
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        load.load(config)
    assert time.monotonic() - started < 1.0
    assert (f"{where.rsplit('/', 1)[-1]}: the YAML expands to more than {load.MAX_YAML_VALUES:,} values "
            "(an alias repeated within aliases?): refused") in str(refused.value)


def test_a_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    config = deployment(tmp_path, CONNECTOR + "x-loop: &loop [a, *loop]\n")
    with pytest.raises(ConfigError, match=r"connector.yaml: the YAML refers to itself \(an alias inside its own "
                                          r"anchor\): refused"):
        load.load(config)


def test_yaml_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    config = deployment(tmp_path, CONNECTOR + "x-deep: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match=r"connector\.yaml: the YAML is nested too deeply: refused"):
        load.load(config)


def test_a_file_too_large_to_be_a_configuration_is_not_read(tmp_path: Path) -> None:
    config = deployment(tmp_path, CONNECTOR + "x-pad: '" + "p" * (load.MAX_YAML_BYTES + 1) + "'\n")
    with pytest.raises(ConfigError, match=rf"connector.yaml: larger than {load.MAX_YAML_BYTES // (1 << 20)} MiB: "
                                          "not a configuration file"):
        load.load(config)


def test_validate_and_run_exit_2_on_a_bomb_without_a_traceback(tmp_path: Path) -> None:
    config = deployment(tmp_path, CONNECTOR + alias_bomb())
    for command in ("validate", "run"):
        done = subprocess.run([sys.executable, "-m", "sftp_connector", "--config", str(config), command],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done.stderr)
        assert "the YAML expands to more than" in done.stderr + done.stdout
        assert "Traceback" not in done.stderr + done.stdout
