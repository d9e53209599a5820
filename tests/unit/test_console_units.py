"""The console's pure parts: password hashes, where it may listen, sessions and CSRF, key expiry warnings,
how a file's columns map, and the audit log."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr, ValidationError

from sftp_connector import files
from sftp_connector.config import models
from sftp_connector.config.connector import ConsoleUser
from sftp_connector.console import audit, auth, views
from sftp_connector.goals import selection
from sftp_connector.paths import RemoteFile


def test_a_password_hash_matches_only_its_password_and_holds_no_password() -> None:
    line = auth.hash_password("a long enough password")
    assert line.startswith("scrypt$16384$8$1$") and "a long enough password" not in line
    assert auth.password_matches("a long enough password", line)
    assert not auth.password_matches("a long enough passwore", line)
    assert auth.hash_password("a long enough password") != line  # salted
    for broken in ("", "scrypt$1$2", "md5$x$y$z$a$b", line.replace("scrypt", "bcrypt"), line + "!"):
        assert not auth.password_matches("a long enough password", broken)


@pytest.mark.parametrize(("host", "allowed"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                               ("localhost", True), ("0.0.0.0", False), ("::", False),
                                               ("10.0.0.5", False), ("console.example", False)])
def test_only_loopback_is_served_without_users(host: str, allowed: bool) -> None:
    problem = auth.bind_problem(host, [])
    assert (problem is None) == allowed
    if problem:
        assert "console.users" in problem and "--hash-password" in problem
    assert auth.bind_problem(host, [_user("ops", token="t" * 30)]) is None


def test_users_sign_in_with_their_own_secret_only() -> None:
    users = [_user("alice", "operator", password="pass phrase of alice"), _user("bob", token="b" * 30)]
    assert auth.authenticate(users, "alice", "pass phrase of alice") == auth.Identity("alice", "operator")
    assert auth.authenticate(users, "bob", "b" * 30) == auth.Identity("bob", "viewer")
    assert auth.authenticate(users, "bob", "pass phrase of alice") is None
    assert auth.authenticate(users, "alice", "b" * 30) is None
    assert auth.authenticate(users, "carol", "anything") is None
    assert auth.bearer(users, "b" * 30) == auth.Identity("bob", "viewer")
    assert auth.bearer(users, "pass phrase of alice") is None  # a password is no bearer token


def test_a_user_needs_exactly_one_proper_secret() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ConsoleUser(name="x")
    with pytest.raises(ValidationError, match="hash-password"):
        ConsoleUser(name="x", password_hash=SecretStr("plain password"))
    with pytest.raises(ValidationError, match="too short"):
        ConsoleUser(name="x", token=SecretStr("short"))
    with pytest.raises(ValidationError):
        ConsoleUser(name="<script>", token=SecretStr("t" * 30))


def test_sessions_expire_and_csrf_tokens_are_checked() -> None:
    sessions = auth.Sessions(lifetime_s=0.2)
    key, session = sessions.new(auth.Identity("alice", "operator"))
    other, _ = sessions.new(None)
    assert key != other and sessions.get(key) is session
    assert auth.csrf_matches(session, session.csrf)
    assert not auth.csrf_matches(session, None) and not auth.csrf_matches(session, "")
    assert not auth.csrf_matches(session, session.csrf[:-1])
    sessions.end(key)
    assert sessions.get(key) is None
    time.sleep(0.3)
    assert sessions.get(other) is None


def test_sessions_not_signed_in_are_short_and_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_SESSIONS", 50)
    sessions = auth.Sessions(lifetime_s=3600)
    signed, _ = sessions.new(auth.Identity("alice", "operator"))
    _, anonymous = sessions.new(None)
    assert anonymous.expires <= time.time() + auth.ANONYMOUS_S
    keys = [sessions.new(None)[0] for _ in range(100)]
    assert sessions.get(keys[-1]) is not None and sessions.get(keys[0]) is None
    assert sessions.get(signed) is not None  # a flood of sign-in forms signs nobody out
    assert len(sessions._by_id) == 50


def test_a_name_is_refused_after_five_failed_sign_ins() -> None:
    throttle = auth.Throttle(limit=5, window_s=0.3)
    for _ in range(4):
        throttle.failed("alice")
    assert not throttle.blocked("alice")
    throttle.failed("alice")
    assert throttle.blocked("alice") and not throttle.blocked("bob")
    time.sleep(0.35)
    assert not throttle.blocked("alice")
    throttle.failed("alice")
    throttle.succeeded("alice")
    assert not throttle.blocked("alice")


def test_keys_warn_thirty_days_before_they_expire() -> None:
    now = time.time()
    iso = lambda days: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + days * 86400))  # noqa: E731
    assert views._expiry_warning(None, now) is None
    assert views._expiry_warning(iso(45), now) is None
    assert views._expiry_warning(iso(29.8), now) == "expires in 30 day(s): renew it"
    assert views._expiry_warning(iso(2), now) == "expires in 2 day(s): renew it"
    assert views._expiry_warning(iso(-1), now) == "expired"


def test_columns_map_to_properties_with_their_rules() -> None:
    goal = models.ImportProfiles.model_validate({
        "kind": "import-profiles", "name": "g", "prefix": "crm_",
        "files": [{"name": "people", "directory": "in", "pattern": "p_*.csv"},
                  {"name": "orders", "directory": "in", "pattern": "o_*.csv", "parent": "people",
                   "link": {"parent": "id", "child": "person"}}],
        "identifiers": [{"field": "email", "property": "email"}],
        "groups": [{"type": "household", "field": "house"}],
        "mappings": [{"field": "points", "property": "points", "rule": "sum"},
                     {"field": "orders.total", "property": "spent", "rule": "add"}],
        "bulk_mapping": {"rule": "set_if_empty"}})
    root = views.column_mapping(goal, "people", ["email", "points", "house", "city", "_row"], root=True)
    assert root["email"] == {"property": "email", "rule": "identifier"}
    assert root["points"] == {"property": "crm_points", "rule": "sum"}
    assert root["house"] == {"property": "group household", "rule": "set"}
    assert root["city"] == {"property": "crm_city", "rule": "set_if_empty"}  # bulk mapping
    assert root["_row"] == {"property": None, "rule": None}
    child = views.column_mapping(goal, "orders", ["total", "person"], root=False)
    assert child == {"total": {"property": "crm_spent", "rule": "add"}, "person": {"property": None, "rule": None}}


def test_each_file_on_the_server_is_told_what_the_next_run_does_with_it() -> None:
    now = time.time()
    old, fresh = RemoteFile("/in/a.csv", 10, int(now - 3600)), RemoteFile("/in/b.csv", 10, int(now - 5))
    ready = selection.Candidate(files.Match(old, "a"), now, True)
    record = SimpleNamespace(size=10, mtime=old.mtime, sha256="x", config_digest="d", listed_at=now - 60,
                             imported_at=now - 60)

    def told(candidate: selection.Candidate, remote: RemoteFile, rec: object = None, failure: str | None = None
             ) -> tuple[str, str]:
        return views._next_run(candidate, remote, rec, "d", 30, failure)

    assert told(ready, old)[0] == "imports"
    assert told(ready, old, record)[0] == "unchanged"
    assert told(ready, old, SimpleNamespace(**{**vars(record), "config_digest": "other"}))[0] == "imports"
    status, why = told(ready, fresh)
    assert status == "changing" and why.endswith(" s ago: a run imports it once it stays unchanged for 30 s")
    assert told(ready, old, None, "row 3: bad") == ("failed", "failed last time, retried on the next run: row 3: bad")
    assert told(selection.Candidate(files.Match(old, "a"), now, False), old)[0] == "waiting"
    missing = selection.Candidate(files.Match(old, "a"), now, True, missing="no orders file for a")
    assert told(missing, old) == ("waiting", "its linked set is incomplete: no orders file for a")


def test_the_audit_log_is_private_and_newest_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    audit.record(state, "alice", "run", {"goals": ["customers"], "dry_run": False})
    audit.record(state, "alice", "unmask", {"page": "/profiles"})
    entries = audit.entries(state)
    assert [e["action"] for e in entries] == ["unmask", "run"]
    assert entries[1]["what"] == {"goals": ["customers"], "dry_run": False} and entries[0]["at"].endswith("Z")
    assert stat.S_IMODE(os.stat(state / audit.FILE_NAME).st_mode) == 0o600


def _user(name: str, role: str = "viewer", *, password: str | None = None, token: str | None = None) -> ConsoleUser:
    return ConsoleUser.model_validate({
        "name": name, "role": role, "token": token,
        "password_hash": auth.hash_password(password) if password else None})
