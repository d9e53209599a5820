"""Hostile remote names and links, end to end: nothing is read from outside `sftp.home`, nothing written outside
the state folder, and every refusal names goal, file and cause.

The rule (SECURITY.md): symbolic links on the server are never followed. A link in a goal
directory is not a file (skipped, with a warning naming it); a goal directory, or a folder
a file is moved to, that leads out of `sftp.home` through a link, or lies outside it, is
refused. A file whose name holds control characters or bidi overrides, or is not UTF-8,
is listed but refused when read, so it fails visibly. Names no file can have (`..`, `/`)
can only come from a broken or hostile server and are skipped. Local paths never come from
remote names: only a hash and a sanitised name are used.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from sftp_connector import errors, loopback, sftp
from sftp_connector.config import load
from sftp_connector.errors import ConfigError
from sftp_connector.goals import runner
from sftp_connector.store import db, queries
from tests.fixtures.connector import Deployment
from tests.hostile.helpers import OLD, cli_run, error_of, files_of, local_files, put_raw, store_contents

ROWS = "email,name\n{tag}@example.test,{tag}\n"
FORGED = "2026-01-01 00:00:00,000 ERROR sftp_connector: forged"


def goal(name: str, directory: str, pattern: str = "customers_*.csv", **extra: Any) -> dict[str, Any]:
    return {"kind": "import-profiles", "name": name,
            "files": [{"name": "customers", "directory": directory, "pattern": pattern}],
            "stable_after_s": 0, "identifiers": [{"field": "email", "property": "email"}],
            "mappings": [{"field": "name", "property": "name"}], **extra}


@pytest.fixture
def tenant(deployment: Deployment) -> Iterator[Path]:
    """A folder of the same SFTP user beside the deployment's home (another tenant's), with a readable secret."""
    user = deployment.remote.user
    folder = user.mkdir(f"{deployment.remote.local.name}-tenant")
    user.put(f"{folder.name}/secret.csv", ROWS.format(tag="tenant-secret"), mtime=OLD)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)




def test_unsafe_names_and_links_are_refused_and_nothing_leaves_home(deployment: Deployment, tenant: Path) -> None:
    home = deployment.remote.remote
    deployment.write_goal("customers", goal("customers", "in"))
    deployment.put("in/customers_ok.csv", ROWS.format(tag="ok"), mtime=OLD)
    odd = {b"customers_forge\n" + FORGED.encode() + b".csv": "\\n", b"customers_esc\x1b[2J.csv": "\\x1b",
           "customers_bidi\u202evsc.csv".encode(): "\\u202e"}
    for raw in odd:
        put_raw(deployment, b"in/" + raw, ROWS.format(tag="odd"))
    put_raw(deployment, b"in/customers_latin1_M\xe4rz.csv", ROWS.format(tag="latin1"))
    links = {"customers_passwd.csv": "/etc/passwd", "customers_tenant.csv": str(tenant / "secret.csv"),
             "customers_alias.csv": "customers_ok.csv"}
    for name, target in links.items():
        os.symlink(target, deployment.remote_path(f"in/{name}"))
    os.symlink(tenant, deployment.remote_path("linked"))
    deployment.write_goal("linked_dir", goal("linked_dir", "linked", "*.csv"))
    deployment.write_goal("relative_escape", goal("relative_escape", f"../{tenant.name}", "*.csv"))
    deployment.write_goal("absolute_escape", goal("absolute_escape", "/etc", "passwd"))
    deployment.write_goal("regex_escape", {**goal("regex_escape", "in"), "files": [
        {"name": "customers", "directory": "in", "regex": r"(\.\./|/).*|.*passwd.*"}]})
    before_local = local_files(deployment.dir)

    done, run = cli_run(deployment)

    assert done.returncode == 1
    goals = {g["goal"]: g for g in run["goals"]}
    files = files_of(run, "customers")
    assert files.pop("customers_ok.csv")["status"] == "imported"
    causes = {name: error_of(file, "customers", home) for name, file in files.items()}
    for raw, shown in odd.items():
        assert causes.pop(raw.decode()) == (f"not read: its name holds the control character {shown}; "
                                            "rename or remove it on the server")
    assert causes == {"customers_latin1_M\\xe4rz.csv": "not read: its name is not valid UTF-8; rename or remove "
                                                      "it on the server"}  # and no link is listed at all
    for name in links:
        assert f"skipped {home}/in/{name}: it is a symbolic link, and links are never followed" in done.stderr
    assert goals["linked_dir"]["error"] == (
        f"goal linked_dir: cannot list {home}/linked: it leads to {tenant} on the server, outside sftp.home "
        f"({home}); the connector never follows a symbolic link out of its home")
    for name, where in (("relative_escape", str(tenant)), ("absolute_escape", "/etc")):
        assert goals[name]["error"] == (f"goal {name}: cannot list {where}: it is outside sftp.home ({home}), and "
                                        f"the connector never leaves its home on the server{sftp.HOME_HINT}")
    for name in ("regex_escape",):  # patterns match names, and names hold no path (a `/` in a glob is refused)
        assert (goals[name]["status"], goals[name]["files"]) == ("success", [])

    assert [p["email"] for p in deployment.properties()] == [["ok@example.test"]]
    dumped = str(store_contents(deployment))
    assert "root:" not in dumped and "tenant-secret" not in dumped
    assert local_files(deployment.dir) == before_local  # nothing written outside state/
    assert not any(line.startswith(FORGED) for line in done.stderr.splitlines())  # a name cannot forge a log line
    assert "\x1b" not in done.stderr and "\u202e" not in done.stderr


def test_move_to_and_done_marker_cannot_leave_the_directory(
    deployment: Deployment, tenant: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = deployment.remote.remote
    deployment.write_goal("move_up", goal("move_up", "up", after_import={"move_to": "../../../escaped"}))
    deployment.write_goal("move_link", goal("move_link", "link", after_import={"move_to": "archive/2024"}))
    for folder in ("up", "link", "marker"):
        deployment.put(f"{folder}/customers_{folder}.csv", ROWS.format(tag=folder), mtime=OLD)
    deployment.put("customers_marker.csv.done", "", mtime=OLD)  # where "../{name}.done" points
    os.symlink(tenant, deployment.remote_path("link/archive"))
    before_tenant = sorted(p.name for p in tenant.rglob("*"))

    with caplog.at_level(logging.WARNING):
        result = deployment.run()

    goals = {g.goal: g for g in result.goals}
    assert [f.status for f in goals["move_up"].files] == ["imported"]
    assert [f.status for f in goals["move_link"].files] == ["imported"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    escaped = str(Path(home).parents[1] / "escaped")

    def warned(goal: str, file: str, cause: str) -> bool:
        return any(w.startswith(f"goal {goal}: ") and f" {home}/{file}: " in w and w.endswith(cause) for w in warnings)

    assert warned("move_up", "up/customers_up.csv", f"cannot move to {escaped}: it is outside sftp.home ({home}), "
                  f"and the connector never leaves its home on the server{sftp.HOME_HINT}"), warnings
    assert warned("move_link", "link/customers_link.csv", f"cannot create directory {home}/link/archive: it leads to "
                  f"{tenant} on the server, outside sftp.home ({home}); the connector never follows a symbolic link "
                  "out of its home"), warnings
    assert deployment.remote_path("up/customers_up.csv").exists() and not Path(escaped).exists()
    assert deployment.remote_path("link/customers_link.csv").exists()
    assert sorted(p.name for p in tenant.rglob("*")) == before_tenant  # no folder made through the link
    # done_markers that would leave the folder, or read attributes, are refused when the configuration loads.
    for name, marker, why in (("marker_up", "../{name}.done", "must name a file in the same directory"),
                              ("marker_bad", "{name.__class__}", "unknown placeholder {name.__class__}")):
        path = deployment.write_goal(name, goal(name, "marker", done_marker=marker))
        with pytest.raises(ConfigError, match=re.escape(why)):
            deployment.config()
        path.unlink()
    assert sorted(p["email"][0] for p in deployment.properties()) == ["link@example.test", "up@example.test"]


# ── a server that sends names no file can have ───────────────────────────────────────


IMPOSSIBLE = ["../customers_escape.csv", "/etc/passwd", "sub/customers_x.csv", ".", "..", ""]


class _LyingJail(loopback._Jail):
    """The loopback server's SFTP operations, but its listings also hold names no file can have."""

    def list_folder(self, path: str) -> Any:
        entries = super().list_folder(path)
        if isinstance(entries, int):
            return entries
        size = len(ROWS.format(tag="escape"))
        return entries + [paramiko.SFTPAttributes.from_stat(os.stat_result(
            (stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, size, int(OLD), int(OLD), int(OLD))), name) for name in IMPOSSIBLE]


def test_a_server_sending_impossible_names_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    served = tmp_path / "served"
    (served / "in").mkdir(parents=True)
    (served / "in" / "customers_ok.csv").write_text(ROWS.format(tag="ok"))
    (served / "customers_escape.csv").write_text(ROWS.format(tag="escape"))  # what "in/../…" would reach
    base = tmp_path / "deploy"
    (base / "goals").mkdir(parents=True)
    (base / "goals" / "all.yaml").write_text(yaml.safe_dump(goal("all", "in", "*")))
    monkeypatch.setattr(loopback, "_Jail", _LyingJail)
    with loopback.LoopbackServer(served, username="partner", password="pw-loopback") as server:
        (base / "known_hosts").write_text(server.known_hosts_line() + "\n")
        (base / "connector.yaml").write_text(yaml.safe_dump({
            "sftp": {"host": server.host, "port": server.port, "username": "partner", "known_hosts": "known_hosts",
                     "auth": {"method": "password", "password": "pw-loopback"}, "retries": 0, "timeout_s": 10},
            "pgp": {"enabled": False}, "store": {"url": "sqlite:///state/connector.db"}}))
        config = load.load(base / "connector.yaml")
        store = db.open_store(config.connector.store.url)
        try:
            with caplog.at_level(logging.WARNING):
                result = runner.run(config, store)
            with store.engine.connect() as conn:
                profiles = [p["properties"]["email"] for p in queries.iter_profiles(conn)]
        finally:
            store.dispose()
    assert [(f.path, f.status) for g in result.goals for f in g.files] == [("/in/customers_ok.csv", "imported")]
    assert profiles == [["ok@example.test"]]
    skipped = [r.getMessage() for r in caplog.records if "no file can have" in r.getMessage()]
    assert skipped == [f"skipped {name!r} in /in: the server sent a name no file can have"
                       for name in IMPOSSIBLE if name not in (".", "..")]  # those two every server sends
    assert sorted(p.name for p in base.iterdir()) == ["connector.yaml", "goals", "known_hosts", "state"]


# ── links swapped in behind the connector's back ─────────────────────────────────────


def test_a_file_swapped_for_a_link_after_listing_is_not_read(deployment: Deployment, tmp_path: Path) -> None:
    target = deployment.put("in/customers_1.csv", ROWS.format(tag="x"), mtime=OLD)
    work = tmp_path / "work"
    work.mkdir()
    with sftp.connect(deployment.config().connector.sftp) as session:
        (listed,) = session.list("in")
        target.unlink()
        os.symlink("/etc/passwd", target)  # between the stability listings and the download, say
        with pytest.raises(errors.InputError, match="is no longer a regular file"):
            session.download(listed, work / "copy")
    assert list(work.iterdir()) == []  # not even a partial copy


def test_an_upload_never_writes_through_a_link_planted_at_its_partial_name(
    deployment: Deployment, tenant: Path, tmp_path: Path
) -> None:
    victim = tenant / "secret.csv"
    before = victim.read_bytes()
    deployment.remote.user.mkdir(f"{deployment.remote.local.name}/out")
    os.symlink(victim, deployment.remote_path(f"out/{sftp.partial_name('export.csv')}"))
    (tmp_path / "export.csv").write_text("profile_id\n1\n")
    with sftp.connect(deployment.config().connector.sftp) as session:
        session.upload_atomic(tmp_path / "export.csv", "out/export.csv")
    assert victim.read_bytes() == before
    assert deployment.remote_path("out/export.csv").read_text() == "profile_id\n1\n"
