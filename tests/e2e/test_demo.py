"""The demo runs on its own: no sshd, no config, only gpg and the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.connector import ROOT


def test_demo_tours_an_import_and_keeps_its_folder(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sftp_connector", "demo", "--keep", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Run 1: households, then customers, then orders (which add total_spent to two customers).
    assert "success: 5 profiles created, 2 updated; 2 groups created, 0 updated" in done.stdout
    assert "success: 1 profiles created, 2 updated; 0 groups created, 0 updated" in done.stdout
    assert "1 unchanged file(s)" in done.stdout  # run 2 skips the first customers file
    assert "2 unchanged file(s)" in done.stdout  # run 3 skips both
    assert "BOOK-1 x 1, CHESS-2 x 1" in done.stdout  # an event with its nested products
    assert "37.5" in done.stdout  # orders.amount summed into total_spent
    assert "books|chess|running" in done.stdout  # add
    assert "Robert" in done.stdout  # set
    # The rejected cell is shown as its rejects file holds it (row, column, value, why).
    assert "customers_001.csv │ 4   │ points │ not-a-number │ `points` is not a number" in done.stdout
    # Step 4: the newsletter export, encrypted to the partner, decrypted back by the partner.
    assert "id,email,first_name,interests,segments" in done.stdout
    assert "2,bob@example.com,Robert,cycling,newsletter" in done.stdout
    assert "eve@example.com" not in done.stdout.split("id,email,first_name")[1]  # newsletter: no
    assert [p.suffix for p in (tmp_path / "demo" / "server" / "out" / "newsletter").iterdir()] == [".gpg"]
    assert (tmp_path / "demo" / "state" / "connector.db").exists()
    assert "Traceback" not in done.stderr
    assert oct((tmp_path / "demo" / "keys" / "connector.private.asc").stat().st_mode)[-3:] == "600"
