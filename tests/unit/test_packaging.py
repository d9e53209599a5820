"""The ops artefacts: the Dockerfile, .dockerignore and the systemd unit say what deploy/README.md promises."""

from __future__ import annotations

import configparser
import contextlib
import fnmatch
import grp
import http.server
import json
import os
import pwd
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "sftp-connector.service"
INSTALLED_BINARY = "/opt/sftp-connector/.venv/bin/sftp-connector"
# Not shutil.which alone: /usr/bin is often missing from PATH in minimal CI shells.
SYSTEMD_ANALYZE_PATHS = ("/usr/bin/systemd-analyze", "/bin/systemd-analyze")
HOME = "/srv/sftp-connector"


# ── pyproject ─────────────────────────────────────────────────────────────────────────


def test_the_license_is_an_spdx_expression_as_pep_639_asks() -> None:
    # The table form {text = ...} is deprecated: setuptools warns on every build and refuses it from 2027-02-18.
    import importlib.metadata
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]  # the first to accept the string form
    assert importlib.metadata.metadata("sftp-connector")["License-Expression"] == "Apache-2.0"


# ── Dockerfile ───────────────────────────────────────────────────────────────────────


def dockerfile() -> list[tuple[str, str]]:
    """Given the repository's Dockerfile, return its instructions as (KEYWORD, arguments), lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def arguments(keyword: str) -> list[str]:
    """Given an instruction keyword, return the arguments of each of its occurrences, in order."""
    return [args for key, args in dockerfile() if key == keyword]


def only(keyword: str) -> str:
    """Given an instruction keyword, return its arguments. Fail unless it occurs exactly once."""
    found = arguments(keyword)
    assert len(found) == 1, f"expected one {keyword} in the Dockerfile, found {len(found)}"
    return found[0]


def test_base_image_is_slim_python_311() -> None:
    assert only("FROM") == "python:3.11-slim-bookworm"


def test_runs_as_a_fixed_non_root_user_before_the_entrypoint() -> None:
    keywords = [key for key, _ in dockerfile()]
    users = arguments("USER")
    assert users, "no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0", ""} and group not in {"root", "0"}, users[-1]
    assert len(keywords) - 1 - keywords[::-1].index("USER") < keywords.index("ENTRYPOINT")
    created = " ".join(arguments("RUN"))
    assert "useradd" in created and "--uid 10001" in created and "--gid 10001" in created
    assert user in {"10001", "sftpc"}, f"USER {user} is not the user the image creates (sftpc, uid 10001)"


def test_installs_gpg_gpg_agent_openssh_client_and_tini_without_recommends() -> None:
    apt = next(run for run in arguments("RUN") if "apt-get install" in run)
    words = shlex.split(apt)
    # gpg-agent: GnuPG 2 needs the agent for every private-key operation, and Debian's gpg only recommends it.
    # tini: PID 1 that reaps the gpg-agents gpg leaves behind as orphans.
    assert {"gpg", "gpg-agent", "openssh-client", "tini", "--no-install-recommends"} <= set(words), words
    assert "rm -rf /var/lib/apt/lists/*" in apt


def test_installs_the_package_with_postgres_from_the_build_context_at_the_tested_versions() -> None:
    copied = {src for args in arguments("COPY") for src in args.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "sftp_connector/", "deploy/constraints.txt"}
    assert any('pip install --no-cache-dir -c deploy/constraints.txt ".[postgres]"' in run for run in arguments("RUN"))


def test_the_constraints_are_the_versions_the_tests_run_with() -> None:
    pinned = [line.split("==") for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    assert len(pinned) > 20 and all(len(pin) == 2 for pin in pinned)
    assert {name.lower() for name, _ in pinned} >= {"polars", "paramiko", "sqlalchemy", "alembic", "psycopg", "typer"}
    wrong = [(name, version, metadata.version(name)) for name, version in pinned if metadata.version(name) != version]
    assert not wrong, f"installed versions differ from deploy/constraints.txt (run scripts/setup): {wrong}"


def test_environment_workdir_volumes_and_port() -> None:
    env = " ".join(arguments("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert arguments("WORKDIR")[-1] == HOME
    volumes = {path for args in arguments("VOLUME") for path in json.loads(args)}
    assert volumes == {f"{HOME}/goals", f"{HOME}/keys", f"{HOME}/state"}
    assert only("EXPOSE") == "9464"


def test_volumes_are_declared_after_their_owner_is_set() -> None:
    # Docker discards changes made under a VOLUME path after its declaration.
    keywords = [key for key, _ in dockerfile()]
    chown = max(i for i, (key, args) in enumerate(dockerfile()) if key == "RUN" and "chown" in args)
    assert chown < keywords.index("VOLUME")


def test_entrypoint_logs_json_and_cmd_runs_the_daemon() -> None:
    assert json.loads(only("ENTRYPOINT")) == ["/usr/bin/tini", "--", "sftp-connector", "--log-format", "json"]
    assert json.loads(only("CMD")) == ["daemon", "--health-port", "9464", "--health-host", "0.0.0.0"]


def healthcheck_command() -> list[str]:
    """Given the Dockerfile, return the HEALTHCHECK's command (exec form)."""
    options, _, command = only("HEALTHCHECK").partition(" CMD ")
    assert command, "HEALTHCHECK has no CMD"
    assert all(option.startswith("--") for option in options.split())
    return json.loads(command)


@contextlib.contextmanager
def health_server(status: int) -> Iterator[int]:
    """Given an HTTP status, serve it on /healthz (404 elsewhere) on a free loopback port; yield the port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_asks_healthz_and_fails_unless_it_answers_200(status: int | None, healthy: bool) -> None:
    program, flag, code = healthcheck_command()
    assert (program, flag) == ("python", "-c")  # the slim image has no curl
    assert "http://127.0.0.1:9464/healthz" in code
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(health_server(status)) if status else free_port()
        result = subprocess.run([sys.executable, "-c", code.replace("9464", str(port))],
                                capture_output=True, text=True, timeout=30)
    # Docker reads 0 as healthy and 1 as unhealthy; 2 is reserved.
    assert result.returncode == (0 if healthy else 1), result.stderr


def free_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dockerignored(path: str) -> bool:
    """Given a path in the build context, return whether .dockerignore keeps it out (no ! rules)."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(pattern.startswith("!") for pattern in patterns)
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    # "**/x" matches x in any directory; "x" matches the path x and everything under it.
    return any(fnmatch.fnmatch(part, pattern[3:]) if pattern.startswith("**/") else fnmatch.fnmatch(prefix, pattern)
               for pattern in patterns for prefix, part in zip(prefixes, parts, strict=True))


@pytest.mark.parametrize("path", [".git/config", ".venv/bin/python", "state/connector.db", "keys/id_ed25519",
                                  ".pytest_cache/v", ".ruff_cache/x", ".hypothesis/examples",
                                  "sftp_connector/__pycache__/cli.cpython-311.pyc", "tests/conftest.py"])
def test_dockerignore_keeps_out_local_state_secrets_and_caches(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "sftp_connector/cli.py",
                                  "sftp_connector/config/models.py", "deploy/constraints.txt"])
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    assert not dockerignored(path)


# ── systemd unit ─────────────────────────────────────────────────────────────────────


def unit() -> configparser.ConfigParser:
    """Given deploy/sftp-connector.service, return it parsed (keys case-sensitive, repeated keys: the last)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "RestrictNamespaces": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
    "MemoryDenyWriteExecute": "yes",
    "ProcSubset": "pid",
    "PrivateUsers": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "Environment": "POLARS_SKIP_CPU_CHECK=1",
}


@pytest.mark.parametrize(("key", "value"), HARDENING.items())
def test_unit_hardening(key: str, value: str) -> None:
    service = unit()["Service"]
    assert key in service, f"[Service] has no {key}="
    assert service[key] == value


def test_unit_runs_the_daemon_as_its_own_user_with_state_in_var_lib() -> None:
    parsed = unit()
    service = parsed["Service"]
    assert service["User"] == service["Group"] == "sftp-connector"
    assert service["WorkingDirectory"] == "/etc/sftp-connector"
    assert service["ExecStart"] == (f"{INSTALLED_BINARY} --config /etc/sftp-connector/connector.yaml "
                                    "--log-format json daemon --health-port 9464")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == "90"
    assert service["ReadWritePaths"] == "/var/lib/sftp-connector"
    assert service["StateDirectory"] == "sftp-connector"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def systemd_analyze() -> str:
    """Return the path of systemd-analyze. Fail (never skip) if it is missing: the unit must be verified."""
    for path in SYSTEMD_ANALYZE_PATHS:
        if os.access(path, os.X_OK):
            return path
    pytest.fail("systemd-analyze not found (looked in " + ", ".join(SYSTEMD_ANALYZE_PATHS) + "): "
                "install Debian's systemd package (apt-get install --no-install-recommends systemd)")


def verifiable_copy(directory: Path, extra: str = "") -> Path:
    """Given a directory, write the unit there runnable on this machine; return its path."""
    binary = Path(sys.executable).parent / "sftp-connector"  # the venv's bin/, unresolved
    assert os.access(binary, os.X_OK), f"{binary} missing: pip install -e . into this venv first"
    # The current user, not nobody: systemd warns "Special user nobody configured, this is not safe!".
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    original = UNIT.read_text().splitlines(keepends=True)
    lines = [line.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={binary} ")
             .replace("User=sftp-connector\n", f"User={user}\n")
             .replace("Group=sftp-connector\n", f"Group={group}\n") for line in original]
    changed = [key for key, new in zip(original, lines, strict=True) if key != new]
    assert [line.partition("=")[0] for line in changed] == ["User", "Group", "ExecStart"], changed
    copy = directory / UNIT.name
    copy.write_text("".join(lines) + extra)
    return copy


def verify(copy: Path) -> tuple[int, list[str]]:
    """Given a unit file, run systemd-analyze verify; return its exit code and the stderr lines about the unit."""
    result = subprocess.run([systemd_analyze(), "verify", str(copy)], cwd=copy.parent,
                            capture_output=True, text=True, timeout=120)
    # Other units on the machine may draw warnings too: keep the lines that name ours.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if str(copy) in line or copy.name in line]
    return result.returncode, ours


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    returncode, warnings = verify(verifiable_copy(tmp_path))
    assert returncode == 0 and warnings == [], warnings


def test_systemd_analyze_verify_would_report_a_broken_unit(tmp_path: Path) -> None:
    # The check above is only as good as its filter: a bad value must show up in it.
    returncode, warnings = verify(verifiable_copy(tmp_path, extra="[Service]\nProtectSystem=bananas\n"))
    assert returncode != 0 or any("bananas" in line for line in warnings), warnings


def test_the_unit_narrows_system_calls_beyond_system_service() -> None:
    filters = [line.partition("=")[2] for line in UNIT.read_text().splitlines() if line.startswith("SystemCallFilter=")]
    assert filters[0] == "@system-service"
    assert "~@privileged @resources" in filters, filters


def test_the_exposure_score_is_at_least_as_good_as_0_3_4(tmp_path: Path) -> None:
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text())
    done = subprocess.run([systemd_analyze(), "security", "--offline=yes", str(copy)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    assert score <= 1.2, done.stdout  # 0.3.4's unit: 1.5


def test_a_real_run_works_under_the_units_memory_and_proc_restrictions(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE, as systemd sets it) and ProcSubset=pid (a /proc
    mounted with subset=pid), applied for real to the demo: Python, polars, paramiko, gpg and its agent."""
    environment = dict(line.partition("=")[2].split("=", 1) for line in UNIT.read_text().splitlines()
                       if line.startswith("Environment="))
    binary = Path(sys.executable).parent / "sftp-connector"
    restricted = (f"mount -t proc -o subset=pid proc /proc && test ! -e /proc/meminfo && "
                  f"exec {sys.executable} -c {shlex.quote(MDWE)} {binary} demo")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", restricted],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, **environment})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "newsletter" in done.stdout


MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: kept across execve
    raise SystemExit("PR_SET_MDWE: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_the_wheel_carries_the_consoles_templates_and_assets(tmp_path: Path) -> None:
    """The console works from an installed package (the Docker image, pip): no file outside the wheel."""
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("sftp_connector-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    console = ROOT / "sftp_connector" / "console"
    shipped = {str(p.relative_to(ROOT)) for p in [*console.glob("templates/*"), *console.glob("static/*")]}
    assert shipped and shipped <= names
