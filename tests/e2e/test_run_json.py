"""One shape, one writer: `run --json` and `history --json` print the same run the same way (signer too)."""

from __future__ import annotations

import json

from tests.fixtures.connector import Deployment

GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv.gpg"}]
stable_after_s: 0
identifiers: [{field: email, property: email}]
mappings: [{field: points, property: points, rule: sum}]
"""
RUN_KEYS = ["run", "trigger", "started_at", "finished_at", "status", "dry_run", "goals"]
GOAL_KEYS = ["goal", "kind", "status", "error", "profiles_created", "profiles_updated", "last_profiles",
             "unique_profiles_exchanged", "files"]
FILE_KEYS = ["path", "status", "sha256", "rows_read", "rows_applied", "rows_unchanged", "rows_filtered",
             "rows_rejected", "cells_rejected", "rows_unmatched", "orphans", "no_consent", "erased", "cleared",
             "rows_exported", "signer", "error", "warning"]


def test_run_json_and_history_json_are_one_shape(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL)
    deployment.put_encrypted("in/customers_1.csv.gpg", "email,points\na@x.com,1\n", mtime=0,
                             sign_with=deployment.keys.partner_fpr)
    ran = deployment.cli("run", "--json")
    assert ran.returncode == 0, ran.stderr
    printed = json.loads(ran.stdout.strip().splitlines()[-1])
    history = deployment.cli("history", "--json", "--limit", "1")
    [recorded] = [json.loads(line) for line in history.stdout.splitlines()]
    assert list(printed) == RUN_KEYS
    assert list(printed["goals"][0]) == GOAL_KEYS
    assert list(printed["goals"][0]["files"][0]) == FILE_KEYS
    assert deployment.keys.partner_fpr.endswith(printed["goals"][0]["files"][0]["signer"])  # its key id: key unknown
    assert recorded == printed
