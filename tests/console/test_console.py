"""The operator console in a real browser (Chromium), against the real sshd, gpg and both stores.

An operator signs in, sees the connection and the goals, scans the files on the server,
previews an encrypted file (personal data masked until unmasked, which is recorded), runs
now and watches the run finish, opens the history, a reject file and a profile. A viewer can
neither run nor unmask; a POST without the CSRF token is refused; hostile file names and cell
values render inert. The screenshots in docs/console are made here.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from sftp_connector.console import auth
from sftp_connector.goals import locks
from sftp_connector.store import db
from tests.fixtures.browser import ROOT, free_port, screenshot, wait_for_port
from tests.fixtures.connector import Deployment

PASSWORD = "correct horse battery staple"
TOKEN = "v" * 8 + "0123456789abcdef0123456789"
HOSTILE_NAME = 'customers_2"<img src=x onerror=alert(1)>\u202e\x1b[31m.csv.gpg'
HOSTILE_CELL = "<script>document.title='pwned'</script>"
GOAL = {
    "kind": "import-profiles", "name": "customers",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*.csv.gpg"}], "stable_after_s": 0,
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": "name", "property": "name"}, {"field": "points", "property": "points", "rule": "sum"}],
    "events": [{"type": "order", "id": "order_id", "time": "at", "properties": {"total": "points"}}],
}
CUSTOMERS = ("email,name,points,order_id,at\n"
             "ada@example.com,Ada,10,O1,2026-11-01T10:00:00Z\n"
             f"bob@example.com,\"{HOSTILE_CELL}\",5,O2,2026-11-02T10:00:00Z\n"
             "cy@example.com,\"Cy\u202e\x07 \"\"quoted\"\"\",not-a-number,O3,2026-11-03T10:00:00Z\n")


def _users(deployment: Deployment) -> None:
    """An operator (password) and a viewer (token), email labelled pii."""
    keys = deployment.dir / "keys"
    (keys / "alice.hash").write_text(auth.hash_password(PASSWORD) + "\n")
    (keys / "bob.token").write_text(TOKEN + "\n")
    for secret in ("alice.hash", "bob.token"):
        (keys / secret).chmod(0o600)
    deployment.update_connector({
        "console": {"users": [{"name": "alice", "role": "operator", "password_hash_file": "keys/alice.hash"},
                              {"name": "bob", "role": "viewer", "token_file": "keys/bob.token"}]},
        "labels": {"email": ["pii"]},
    })


def _deploy(deployment: Deployment) -> None:
    _users(deployment)
    deployment.write_goal("customers", GOAL)
    deployment.put_encrypted("in/customers_1.csv.gpg", CUSTOMERS, mtime=0)
    deployment.put_encrypted(f"in/{HOSTILE_NAME}", "email,name,points,order_id,at\n", mtime=0)


def _sign_in(browser: Any, url: str, user: str, secret: str) -> None:
    browser.get(url + "/")
    assert "/signin" in browser.current_url
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "secret").send_keys(secret)
    browser.find_element(By.ID, "signin-button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "who").text.startswith(user))


def _signed_in(deployment: Deployment, console_server: Callable[..., str], browser: Any, user: str = "alice",
               secret: str = PASSWORD) -> str:
    """Deploy the goal, users and files, start the console and sign in; return the console's URL."""
    _deploy(deployment)
    url = console_server(deployment.config_path, "console")
    _sign_in(browser, url, user, secret)
    return url


def _finished_run(browser: Any) -> Any:
    """Wait for the run started here to end (the page follows it live, then reloads itself once); return the
    link to it."""
    _wait(browser, lambda d: d.find_elements(By.ID, "live-run") and "running" not in _text(d, "live-status"),
          timeout=120)
    _wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    return _wait(browser, lambda d: "running" not in _text(d, "goal-locks") and d.find_element(By.ID, "live-run"))


def _wait(browser: Any, condition: Callable[[Any], Any], timeout: float = 60) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.2,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)


def _no_alert(browser: Any) -> None:
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - the access raises when there is no alert


def _css(browser: Any, selector: str) -> Any:
    """The first element the selector finds, once the page that has it is there."""
    return _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, selector), timeout=30)


def _text(browser: Any, element_id: str) -> str:
    """The element's text, once the page that has it is there (a click may still be loading it)."""
    return str(_wait(browser, lambda d: d.find_element(By.ID, element_id), timeout=30).text)


def test_an_operator_sees_previews_runs_and_follows_the_run(
    deployment: Deployment, console_server: Callable[..., str], browser: Any, store_url: str
) -> None:
    url = _signed_in(deployment, console_server, browser)
    shots = store_url.startswith("sqlite")  # one set of screenshots for the README

    connection = _text(browser, "connection")
    assert f"{deployment.config().connector.sftp.host}:{deployment.config().connector.sftp.port}" in connection
    assert "SHA256:" in connection and "key" in connection
    assert "PGP on" in browser.page_source and "our key (decrypts, signs)" in _text(browser, "pgp")
    assert "customers" in _text(browser, "outcomes") and "never run" in _text(browser, "outcomes")
    assert PASSWORD not in browser.page_source and TOKEN not in browser.page_source
    if shots:
        screenshot(browser, "overview")

    browser.find_element(By.LINK_TEXT, "Goals").click()
    mappings = _css(browser, ".mappings").text
    assert "points points sum" in mappings and "name name set" in mappings
    if shots:
        screenshot(browser, "goals")

    browser.find_element(By.LINK_TEXT, "Scan now: files on the server").click()
    files = _text(browser, "files")
    assert "customers_1.csv.gpg" in files and "imports" in files
    # The hostile name is shown escaped, as text: no <img> element, the bidi override and ESC as escapes.
    assert '"<img src=x onerror=alert(1)>' in files and "\\u202e" in files and "\\x1b" in files
    assert not browser.find_elements(By.CSS_SELECTOR, "#files img")
    _no_alert(browser)
    if shots:
        screenshot(browser, "files")

    browser.find_elements(By.CSS_SELECTOR, ".preview-link")[0].click()  # customers_1.csv.gpg's row
    part = _css(browser, ".part").text
    assert part.startswith("customers_1.csv.gpg")
    assert "email email pii identifier" in part and "order_id unmapped" in part
    assert "ada@example.com" not in browser.page_source and "•••" in part
    assert HOSTILE_CELL in part  # shown as text, not run
    assert 'Cy\\u202e\\x07 "quoted"' in part  # the bidi override and the bell escaped, the quotes kept
    assert browser.title != "pwned"
    _no_alert(browser)
    browser.find_element(By.ID, "unmask").click()
    _wait(browser, lambda d: "ada@example.com" in d.page_source)
    if shots:
        screenshot(browser, "preview")
    browser.find_element(By.ID, "mask").click()
    _wait(browser, lambda d: "ada@example.com" not in d.page_source)

    browser.find_element(By.LINK_TEXT, "Run now").click()
    Select(browser.find_element(By.ID, "goal")).select_by_value("*")
    browser.find_element(By.ID, "run-button").click()
    link = _finished_run(browser)
    assert "failed" in _text(browser, "live-status")  # the hostile file is empty: no columns, it fails
    assert "customers failed goal customers, file " in _text(browser, "live-outcomes")
    assert any("rows merged" in row.text for row in browser.find_elements(By.CSS_SELECTOR, "#live-progress tr"))
    if shots:
        screenshot(browser, "run-now")
    run_id = link.text
    link.click()

    assert _wait(browser, lambda d: run_id in d.title)
    page = _css(browser, "main").text
    assert "2 profile(s) created" in page or "3 profile(s) created" in page
    assert "customers_1.csv.gpg" in page and "by hand" in page
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")  # the hostile name in the error is text
    if shots:
        screenshot(browser, "run")
    _css(browser, ".reject-link").click()
    rejects = _text(browser, "rejects")
    assert "`points` is not a number" in rejects and "_reason" in rejects
    if shots:
        screenshot(browser, "rejects")
    download = browser.find_element(By.ID, "download").get_attribute("href")
    body = _fetch(browser, download)
    assert body.startswith(b"email,name,points") and b"not a number" in body

    browser.get(url + "/goals/customers/files")
    rows = {row.find_element(By.CSS_SELECTOR, "td").text: row.text
            for row in browser.find_elements(By.CSS_SELECTOR, "#files tr.file")}
    [done] = [text for name, text in rows.items() if name.endswith("customers_1.csv.gpg")]
    [hostile] = [text for name, text in rows.items() if "onerror" in name]
    assert "unchanged imported" in done and "failed failed last time, retried on the next run: " in hostile
    deployment.put_encrypted("in/customers_3.csv.gpg", CUSTOMERS, mtime=time.time())
    deployment.write_goal("customers", {**GOAL, "stable_after_s": 3600})
    browser.get(url + "/goals/customers/files")
    assert "changing modified" in _text(browser, "files")
    deployment.write_goal("customers", GOAL)

    browser.get(url + f"/history/{run_id}")
    _css(browser, ".profile-link").click()
    profile = _text(browser, "profile")
    assert "Timeline" in profile and "order" in _text(browser, "events")
    assert "•••" in _text(browser, "properties")  # email is pii
    if shots:
        screenshot(browser, "profile")

    browser.get(url + "/profiles?q=" + urllib.parse.quote("ada@example.com"))
    assert "Ada" in _text(browser, "properties") and "O1" in _text(browser, "events")

    browser.find_element(By.LINK_TEXT, "Run history").click()
    assert run_id in _text(browser, "runs") and browser.find_element(By.ID, "chart")
    if shots:
        screenshot(browser, "history")

    secrets = [PASSWORD, TOKEN, deployment.keys.passphrase, auth.hash_password(PASSWORD).split("$")[0] + "$16384"]
    for page in ("/", "/goals", "/goals/customers/files", "/goals/customers/preview", "/history",
                 f"/history/{run_id}", "/run", "/live.json", "/audit", "/profiles?q=ada%40example.com"):
        browser.get(url + page)
        assert not [secret for secret in secrets if secret in browser.page_source], page

    browser.find_element(By.LINK_TEXT, "Audit").click()
    audit = _text(browser, "audit")
    assert "alice run" in audit and "alice unmask" in audit and "alice sign-in" in audit
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"], browser.get_log("browser")


def test_a_viewer_can_neither_run_nor_unmask(
    deployment: Deployment, console_server: Callable[..., str], browser: Any
) -> None:
    url = _signed_in(deployment, console_server, browser, "bob", TOKEN)
    browser.get(url + "/run")
    assert "only an operator may start runs" in _text(browser, "viewer-note")
    assert not browser.find_elements(By.ID, "run-form")
    browser.get(url + "/goals/customers/preview")
    assert not browser.find_elements(By.ID, "unmask") and "ada@example.com" not in browser.page_source
    assert not browser.find_elements(By.LINK_TEXT, "Audit")
    # Even with the session's own CSRF token, the server refuses a viewer's run and unmask.
    csrf = _css(browser, "input[name=csrf]").get_attribute("value")
    for path in ("/run", "/unmask"):
        status, body = _post(browser, url + path, {"csrf": csrf, "goal": "*"})
        assert status == 403 and "viewer" in body
    assert deployment.profiles() == []


def test_a_post_without_the_csrf_token_is_refused_and_headers_are_strict(
    deployment: Deployment, console_server: Callable[..., str], browser: Any
) -> None:
    url = _signed_in(deployment, console_server, browser)
    browser.get(url + "/run")
    csrf = _css(browser, "input[name=csrf]").get_attribute("value")
    # No token, a forged one, or the right one in a form past 64 KiB (not read further): refused.
    for form in ({"goal": "*"}, {"goal": "*", "csrf": "forged"}, {"pad": "x" * 100_000, "goal": "*", "csrf": csrf}):
        status, body = _post(browser, url + "/run", form)
        assert status == 403 and "CSRF" in body
    assert deployment.profiles() == []
    with urllib.request.urlopen(url + "/signin") as response:
        headers = response.headers
        cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    # A wrong password is refused and recorded; the open redirect is not followed.
    browser.delete_all_cookies()
    browser.get(url + "/signin?next=//evil.example/")
    browser.find_element(By.ID, "user").send_keys("alice")
    browser.find_element(By.ID, "secret").send_keys("wrong")
    browser.find_element(By.ID, "signin-button").click()
    assert "wrong user name or password" in _text(browser, "signin-error")
    _sign_in(browser, url, "alice", PASSWORD)
    assert browser.current_url.startswith(url)
    # A bearer token works for scripts; a wrong one is refused.
    request = urllib.request.Request(url + "/live.json", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url + "/", headers={"Authorization": "Bearer nope"}))
    assert refused.value.code == 401


def test_a_dry_run_writes_nothing_and_the_preview_warns_of_a_property_another_goal_fills(
    deployment: Deployment, console_server: Callable[..., str], browser: Any
) -> None:
    url = _signed_in(deployment, console_server, browser)
    deployment.write_goal("loyalty", {**GOAL, "name": "loyalty", "events": [],
                                      "files": [{"name": "loyalty", "directory": "in", "pattern": "loyalty_*.csv"}]})
    big = "email,name,points,order_id,at\n" + "".join(f"c{i}@example.com,N{i},1,B{i},\n" for i in range(30_000))
    deployment.put_encrypted("in/customers_0.csv.gpg", big, mtime=0)  # previewed first (name order)
    browser.get(url + "/goals/customers/preview")
    warnings = [w.text for w in browser.find_elements(By.CSS_SELECTOR, ".warning")]
    assert "profile property points is also written by goal(s) loyalty" in warnings
    heading = _css(browser, ".part h2").text
    assert heading.startswith("customers_0.csv.gpg") and "(a preview reads about the first 1000)" in heading
    assert int(heading.split(" row(s) read")[0].split("· ")[-1]) < 30_000  # the rest of the file is not read
    browser.get(url + "/run")
    Select(browser.find_element(By.ID, "goal")).select_by_value("customers")
    browser.find_element(By.ID, "dry-run").click()
    browser.find_element(By.ID, "run-button").click()
    link = _finished_run(browser)
    assert "(dry run)" in _text(browser, "live-status")
    link.click()
    assert "dry run: nothing was written" in _css(browser, "main").text
    assert deployment.profiles() == []


def test_a_goal_whose_lock_is_held_elsewhere_shows_as_running_there(
    deployment: Deployment, console_server: Callable[..., str], browser: Any
) -> None:
    url = _signed_in(deployment, console_server, browser)
    config = deployment.config()
    store = db.open_store(config.connector.store.url)
    try:
        with locks.goal_lock(store, config.state_dir, "customers") as held:
            assert held
            browser.get(url + "/run")
            assert "running (its lock is held by a run, here or elsewhere)" in _text(browser, "goal-locks")
            Select(browser.find_element(By.ID, "goal")).select_by_value("customers")
            browser.find_element(By.ID, "run-button").click()
            _wait(browser, lambda d: d.find_elements(By.ID, "live-run") and "skipped" in _text(d, "live-status"))
        browser.get(url + "/run")
        assert "running" not in _text(browser, "goal-locks")
    finally:
        store.dispose()
    assert deployment.profiles() == []


def test_the_console_refuses_a_public_address_without_users(deployment: Deployment) -> None:
    ran = deployment.cli("console", "--host", "0.0.0.0", "--port", str(free_port()))
    assert ran.returncode == 2
    assert "without authentication" in ran.stderr and "console.users" in ran.stderr


def test_the_daemon_refuses_a_console_port_that_is_taken(deployment: Deployment) -> None:
    deployment.update_connector({"schedule": {"every_minutes": 600}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ran = deployment.cli("daemon", "--console-port", str(taken.getsockname()[1]), timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert "the console cannot listen on 127.0.0.1:" in ran.stderr and "port is taken" in ran.stderr


def test_hash_password_prints_a_line_that_signs_in(deployment: Deployment) -> None:
    made = subprocess.run([sys.executable, "-m", "sftp_connector", "console", "--hash-password"],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("scrypt$") and PASSWORD not in line
    assert auth.password_matches(PASSWORD, line) and not auth.password_matches("other", line)


def test_the_daemon_serves_the_console_beside_healthz_and_metrics(
    deployment: Deployment, browser: Any, tmp_path: Path
) -> None:
    _deploy(deployment)
    deployment.update_connector({"schedule": {"every_minutes": 600}})
    port = free_port()
    log = tmp_path / "daemon.log"
    with open(log, "w") as output:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sftp_connector", "--config", str(deployment.config_path), "daemon",
             "--console-port", str(port)], cwd=deployment.dir, stdout=output, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_port(port, daemon, log)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not deployment.profiles() and time.monotonic() < deadline:  # the first run starts at once
            time.sleep(0.5)
        with urllib.request.urlopen(url + "/healthz") as response:
            state = json.loads(response.read())
        assert state["ok"] and state["scheduler"]
        with urllib.request.urlopen(url + "/metrics") as response:
            assert b"sftp_connector" in response.read()
        _sign_in(browser, url, "alice", PASSWORD)
        assert "healthy (scheduler running" in _text(browser, "health")
        browser.get(url + "/history")
        assert "schedule" in _text(browser, "runs")
        browser.get(url + "/run")  # the daemon's own run, followed live by the console
        _wait(browser, lambda d: d.find_elements(By.ID, "scheduled-run") and "failed" in _text(d, "scheduled-status"))
        assert "started by schedule" in _text(browser, "scheduled-status")
        assert "customers failed" in _text(browser, "scheduled-outcomes")
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=90) == 0, log.read_text()


# ── helpers ──────────────────────────────────────────────────────────────────────────


def _opener(browser: Any) -> urllib.request.OpenerDirector:
    """An HTTP client holding the browser's cookies (to post or download as the signed-in user)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    opener.addheaders = [("Cookie", cookies)]
    return opener


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post(browser: Any, url: str, form: dict[str, str]) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with _opener(browser).open(urllib.request.Request(url, data=data, method="POST")) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _fetch(browser: Any, url: str) -> bytes:
    with _opener(browser).open(url) as response:
        return bytes(response.read())
