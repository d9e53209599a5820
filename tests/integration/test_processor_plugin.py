"""Processor plugins as an operator installs them: a real package, found through its entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SETUP = """\
import json, logging
import polars as pl
from sftp_connector import errors, processors
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
frame = pl.DataFrame({"_row": [1, 2, 3], "name": ["Anna", "Émile", None], "city": ["Delft", "Gent", ""]})
"""


def python(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Given the plugin's site folder and a script, run it in a fresh interpreter that sees the plugin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", SETUP + textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_plugin_runs_after_the_built_ins(processor_plugin: Path) -> None:
    result = python(processor_plugin, """
        steps = processors.build([{"type": "trim"}, {"type": "reverse_text", "fields": ["name"]}])
        done = processors.run(steps, frame, label="people.csv")
        print(json.dumps({"types": [s.type for s in steps], "rows": done.frame.to_dicts(), "filtered": done.filtered}))
    """)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["types"] == ["trim", "reverse_text"]
    assert out["rows"] == [{"_row": 1, "name": "annA", "city": "Delft"},
                           {"_row": 2, "name": "elimÉ", "city": "Gent"},
                           {"_row": 3, "name": None, "city": ""}]
    assert out["filtered"] == 0
    # the plugin that claims the built-in name `trim` is ignored, with a warning
    assert "WARNING processor plugin reverse_text_plugin:factory ignored: 'trim' is a built-in" in result.stderr


def test_unknown_type_lists_the_plugins_found(processor_plugin: Path) -> None:
    result = python(processor_plugin, """
        try:
            processors.build([{"type": "reverse"}])
        except errors.ConfigError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "processors[0]: unknown type 'reverse' (built in: drop, filter, hash, lowercase, normalize_email, "
        "normalize_phone, parse_date, rename, trim, uppercase; "
        "plugins: broken, drop_row, explodes, notes, reverse_text)"
    )


def test_faulty_plugins_are_named(processor_plugin: Path) -> None:
    result = python(processor_plugin, """
        try:
            processors.build([{"type": "reverse_text", "fields": ["name"], "colour": "red"}, {"type": "broken"}])
        except errors.ConfigError as exc:
            print(json.dumps(exc.problems))
        for kind in ("drop_row", "explodes"):
            try:
                processors.run(processors.build([{"type": kind}]), frame, label="people.csv")
            except errors.InputError as exc:
                print(json.dumps(str(exc)))
    """)
    assert result.returncode == 0, result.stderr
    problems, dropped, exploded = (json.loads(line) for line in result.stdout.splitlines())
    assert problems == [
        "processors[0] (reverse_text): plugin reverse_text_plugin:factory failed: ValueError: "
        "unknown option(s) ['colour']",
        "processors[1] (broken): plugin reverse_text_plugin:broken failed: RuntimeError: no licence key",
    ]
    assert dropped == "file people.csv: processor drop_row: dropped internal column(s) _row"
    assert exploded == "file people.csv: processor explodes: failed: KeyError: 'boom'"
