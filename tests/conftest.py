"""Shared fixtures: each real service lives in its own plugin module under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.sshd",
    "tests.fixtures.gpg",
    "tests.fixtures.postgres",
    "tests.fixtures.connector",
    "tests.fixtures.plugin",
    "tests.fixtures.browser",
]
