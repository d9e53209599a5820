"""Processors in real imports: built-ins run in order before mapping, `filter` counts rows as
filtered, rejected cells go to the rejects file, a third-party plugin installed as a package runs
from the command line, and a bad processor stops the run before it starts."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from tests.fixtures.connector import ROOT, Deployment

OLD = time.time() - 3600

GOAL = """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv"}]
stable_after_s: 0
processors:
  - {type: trim}
  - {type: normalize_email, fields: [email]}
  - {type: filter, where: {field: country, in: [NL, BE]}}
  - {type: parse_date, fields: [born]}
  - {type: normalize_phone, fields: [phone], default_country_code: "+31"}
  - {type: rename, fields: {nick: nickname}}
  - {type: hash, fields: [secret]}
identifiers: [{field: email, property: email}]
mappings:
  - {field: nickname, property: nickname}
  - {field: born, property: birth_date}
  - {field: phone, property: phone}
  - {field: secret, property: secret_hash}
"""

CSV = """\
email,country,born,phone,nick,secret
  Ada@Example.COM ,NL,1990-02-03,06 1234 5678,ada,s1
bob@x.com,DE,1991-01-01,,bob,s2
cy@x.com,BE,not a date,(020) 555-1234,cy,
"""


def test_builtin_processors_run_in_order_before_mapping(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL)
    deployment.put("in/customers_1.csv", CSV, mtime=OLD)
    result = deployment.run()
    assert result.status == "success", result
    counts = result.goals[0].files[0].counts
    assert (counts.rows_read, counts.rows_filtered, counts.rows_applied, counts.cells_rejected) == (3, 1, 2, 1)
    assert deployment.properties() == [
        {"email": ["ada@example.com"], "nickname": ["ada"], "birth_date": ["1990-02-03"], "phone": ["+31612345678"],
         "secret_hash": [hashlib.sha256(b"s1").hexdigest()]},
        {"email": ["cy@x.com"], "nickname": ["cy"], "phone": ["+31205551234"]},
    ]
    [rejects] = (deployment.dir / "state" / "rejects" / result.run).glob("*.csv")
    assert "`born` is not a date" in rejects.read_text() and "not a date" in rejects.read_text()


def test_a_bad_processor_is_a_configuration_error(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL.replace("in: [NL, BE]", "within: [NL, BE]"))
    deployment.put("in/customers_1.csv", CSV, mtime=OLD)
    done = deployment.cli("validate")
    assert done.returncode == 2
    assert "goals/customers.yaml: processors[2] (filter)" in done.stderr
    assert deployment.cli("run").returncode == 2
    deployment.write_goal("customers", GOAL)
    assert deployment.profiles() == []


def test_a_processor_naming_a_missing_field_fails_the_file(deployment: Deployment) -> None:
    deployment.write_goal("customers", GOAL.replace("fields: [email]", "fields: [mail]"))
    deployment.put("in/customers_1.csv", CSV, mtime=OLD)
    result = deployment.run()
    assert result.status == "failed"
    error = result.goals[0].files[0].error or ""
    assert "goal customers" in error and "customers_1.csv" in error and "mail not in the file" in error
    assert deployment.profiles() == []


def test_a_plugin_processor_from_an_installed_package(deployment: Deployment, processor_plugin: Path) -> None:
    deployment.write_goal("customers", """\
kind: import-profiles
name: customers
files: [{name: customers, directory: in, pattern: "customers_*.csv"}]
stable_after_s: 0
processors: [{type: reverse_text, fields: [name]}]
identifiers: [{field: email, property: email}]
mappings: [{field: name, property: name}]
""")
    deployment.put("in/customers_1.csv", "email,name\na@x.com,Ada Lovelace\n", mtime=OLD)
    path = os.pathsep.join([str(ROOT), str(processor_plugin)])
    done = deployment.cli("--log-format", "json", "run", "--json", env={"PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["status"] == "success"
    dumped = deployment.cli("profiles", "dump", env={"PYTHONPATH": path})
    assert [json.loads(line)["properties"] for line in dumped.stdout.splitlines()] == [
        {"email": ["a@x.com"], "name": ["ecalevoL adA"]}]
    # Without the package on the path the type is unknown: a configuration error, nothing runs.
    missing = deployment.cli("validate")
    assert missing.returncode == 2 and "unknown type 'reverse_text'" in missing.stderr
