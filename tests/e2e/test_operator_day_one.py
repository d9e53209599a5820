"""An operator's first day (issue 19): sftp.home, validate's checks and schedule, `${VAR:-default}`,
read-only commands, the exit code of a run that ran nothing."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest
import yaml

from tests.fixtures.connector import Deployment

GOAL = """\
kind: import-profiles
name: customers
files:
  - {name: customers, directory: DIR, pattern: "customers_*.csv.gpg"}
stable_after_s: 0
identifiers:
  - {field: email, property: email}
mappings:
  - {field: points, property: points, rule: sum}
"""
CSV = "email,points\na@x.com,10\n"


def _set_home(deployment: Deployment, home: str | None) -> None:
    config = yaml.safe_load(deployment.config_path.read_text())
    if home is None:
        config["sftp"].pop("home")
    else:
        config["sftp"]["home"] = home
    deployment.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def _folder(deployment: Deployment) -> str:
    """The test's server folder, relative to the user's login directory (its home)."""
    return deployment.remote.local.name


def test_home_defaults_to_the_login_directory(deployment: Deployment) -> None:
    _set_home(deployment, None)
    deployment.write_goal("customers", GOAL.replace("DIR", f"{_folder(deployment)}/in"))
    deployment.put_encrypted("in/customers_1.csv.gpg", CSV)
    result = deployment.run()
    assert result.status == "success", result
    (file,) = result.goals[0].files
    assert file.path == deployment.remote.remote + "/in/customers_1.csv.gpg"  # absolute: records stay stable
    assert deployment.properties() == [{"email": ["a@x.com"], "points": [10]}]


def test_home_may_be_tilde_or_below_it(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL.replace("DIR", "in"))
    deployment.put_encrypted("in/customers_1.csv.gpg", CSV)
    _set_home(deployment, "~/" + _folder(deployment))
    assert deployment.run().status == "success"
    _set_home(deployment, deployment.remote.remote)
    again = deployment.run()
    assert [f.status for g in again.goals for f in g.files] == ["skipped_unchanged"]  # the same absolute path


def test_relative_home_cannot_be_left_with_dot_dot(deployment: Deployment) -> None:
    _set_home(deployment, _folder(deployment))
    deployment.write_goal("customers", GOAL.replace("DIR", "../.."))
    result = deployment.run()
    assert result.status == "failed"
    assert "outside sftp.home" in result.goals[0].error


def test_missing_directory_names_the_home_it_was_resolved_against(deployment: Deployment) -> None:
    _set_home(deployment, None)
    deployment.write_goal("customers", GOAL.replace("DIR", "in/customers"))
    done = deployment.cli("validate", "--connect")
    assert done.returncode != 0
    assert "no such file" in done.stdout + done.stderr
    assert f"sftp.home (the login directory, {deployment.remote.user.remote_home})" in done.stdout + done.stderr


def test_read_only_commands_do_not_need_the_other_secrets(deployment: Deployment) -> None:
    deployment.update_connector({"notifications": {"webhook": {
        "url": "${WEBHOOK_URL}", "headers": {"Authorization": "Bearer ${WEBHOOK_TOKEN}"}}}})
    config = yaml.safe_load(deployment.config_path.read_text())
    config["sftp"]["auth"]["passphrase"] = "${SFTP_KEY_PASSPHRASE}"
    deployment.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    unset = ["WEBHOOK_URL", "WEBHOOK_TOKEN", "SFTP_KEY_PASSPHRASE"]
    for args in (["history"], ["profiles", "dump"], ["groups", "dump"], ["events", "dump"], ["products", "dump"],
                 ["profiles", "get", "--by", "email=a@x.com"], ["keys", "list"], ["store", "upgrade"]):
        done = deployment.cli(*args, unset=unset)
        assert "invalid configuration" not in done.stderr, (args, done.stderr)
        assert done.returncode in (0, 1) if args[1:2] == ["get"] else done.returncode == 0, (args, done.stderr)
    done = deployment.cli("run", unset=unset)
    assert done.returncode == 2
    assert ("at notifications.webhook.headers.Authorization: environment variable WEBHOOK_TOKEN is not set"
            in done.stderr)
    assert "at sftp.auth.passphrase: environment variable SFTP_KEY_PASSPHRASE is not set" in done.stderr


def test_validate_shows_the_schedule_and_the_next_five_runs(deployment: Deployment) -> None:
    deployment.update_connector({"schedule": {"at": "02:00", "timezone": "Europe/Amsterdam"}})
    done = deployment.cli("validate")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = lines.index("schedule: every day at 02:00 (Europe/Amsterdam)")
    following = lines[at + 1:at + 7]
    assert following[0] == "next runs:"
    assert all(line.startswith("  20") and " 02:00 " in line and line.endswith(("CET", "CEST"))
               for line in following[1:])
    deployment.update_connector({"schedule": None})
    assert "schedule: none (runs only when started: sftp-connector run)" in deployment.cli("validate").stdout


EXPORT = {"kind": "export-profiles", "name": "NAME", "segment": "everyone", "directory": "DIR",
          "filename": "x_{run}.csv", "columns": [{"column": "email", "property": "email"}]}


def test_validate_connect_counts_each_pattern_and_checks_export_directories(deployment: Deployment) -> None:
    deployment.update_connector({"segments": {"everyone": {"property": "email", "exists": True}}})
    deployment.write_goal("customers", GOAL.replace("DIR", "in"))
    for name in ("customers_1.csv.gpg", "customers_2.csv.gpg", "other.csv.gpg"):
        deployment.put(f"in/{name}", b"x")
    deployment.put("out/.keep", b"")
    deployment.put("locked/.keep", b"")
    deployment.remote_path("locked").chmod(0o555)
    for name, directory in (("ready", "out"), ("later", "out/new"), ("locked", "locked")):
        deployment.write_goal(name, {**EXPORT, "name": name, "directory": directory})
    done = deployment.cli("validate", "--connect")
    home = deployment.remote.remote
    assert f"customers: {home}/in: 2 file(s) match customers_*.csv.gpg now (3 in the directory)" in done.stdout
    assert f"ready: {home}/out: exists, writable" in done.stdout
    assert f"later: {home}/out/new: missing: the first export creates it" in done.stdout
    assert f"locked: cannot upload to {home}/locked: permission denied" in done.stderr
    assert done.returncode == 1


def test_validate_refuses_a_malformed_known_hosts_line(deployment: Deployment) -> None:
    known_hosts = deployment.dir / "keys" / "known_hosts"
    lines = known_hosts.read_text().splitlines()
    known_hosts.write_text("\n".join([*lines, "example.com ssh-ed25519 not*base64"]) + "\n")
    done = deployment.cli("validate")
    assert done.returncode == 2
    assert (f"connector.yaml: at sftp.known_hosts: {known_hosts}: line {len(lines) + 1} is not a host key line "
            "(the key is not valid base64): fix or remove it") in done.stderr


def test_stable_after_s_waits_only_for_new_or_changed_files(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    deployment.write_goal("customers", GOAL.replace("DIR", "in").replace("stable_after_s: 0", "stable_after_s: 2"))
    deployment.put_encrypted("in/customers_1.csv.gpg", CSV, mtime=time.time() - 3600)
    caplog.set_level(logging.INFO, logger="sftp_connector")
    assert deployment.run().status == "success"
    assert "goal customers: waiting 2s for 1 new or changed file(s) to be stable" in caplog.text
    caplog.clear()
    again = deployment.run()
    assert [f.status for g in again.goals for f in g.files] == ["skipped_unchanged"]
    assert "waiting" not in caplog.text
    deployment.put_encrypted("in/customers_2.csv.gpg", CSV.replace("a@x", "b@x"), mtime=time.time() - 3600)
    caplog.clear()
    third = deployment.run()
    assert "goal customers: waiting 2s for 1 new or changed file(s) to be stable" in caplog.text
    assert sorted(f.status for g in third.goals for f in g.files) == ["imported", "skipped_unchanged"]


def test_keys_commands_leave_no_gpg_agent_running(deployment: Deployment) -> None:
    home = (deployment.dir / "gnupg-home").read_text()
    for args in (["keys", "import", str(deployment.keys.partner_public)], ["keys", "list"]):
        done = deployment.cli(*args)
        assert done.returncode == 0, done.stderr
        agents = subprocess.run(["pgrep", "-f", f"gpg-agent --homedir {home}"], capture_output=True, text=True)
        assert agents.stdout == "", (args, agents.stdout)


def test_progress_reports_rows_merged_with_an_estimated_total(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL.replace("DIR", "in"))
    rows = "".join(f"c{i}@x.com,{i % 5}\n" for i in range(120_000))
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,points\n" + rows, mtime=time.time() - 3600)
    calls: list[tuple[str, int, int, str]] = []
    assert deployment.run(progress=lambda *call: calls.append(call)).status == "success"
    downloaded = [c for c in calls if c[3] == "bytes"]
    merged = [c for c in calls if c[3] == "rows"]
    assert downloaded and downloaded[-1][1] == downloaded[-1][2]
    assert len(merged) >= 2 and merged[-1][1:3] == (120_000, 120_000)  # the last report: done
    assert all(what == "customers_1.csv.gpg rows merged" for what, *_ in merged)
    assert [done for _, done, _, _ in merged] == sorted(done for _, done, _, _ in merged)
    first_total = merged[0][2]
    assert 60_000 < first_total < 240_000  # estimated from the bytes read so far, before the end
