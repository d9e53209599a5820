"""Many small files: a first run over N one-row encrypted files, then a run in which none changed.

    .venv/bin/python -m benchmarks.small_files [--files 20000] [--store sqlite]

Serves N files (`c_00000.csv.gpg`…, one distinct customer each, encrypted to the connector with one
`gpg --multifile` call) from a real OpenSSH sshd on 127.0.0.1, as the test suite does. Stages, each a
whole process timed with its peak memory:

  first run     `sftp-connector run` imports all N files into an empty store: files per second
  no change     the same run again: nothing is downloaded
  baseline      OpenSSH sftp fetching the N files in one session (`get *`) and one gpg decrypting
                them all (`--multifile`): the raw tools' floor for the same bytes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.baseline import Raw
from benchmarks.bench import _python, timed
from tests.fixtures.connector import ROOT, write_connector
from tests.fixtures.gpg import generated_keys, gpg
from tests.fixtures.postgres import new_database, running_postgres
from tests.fixtures.sshd import SftpDir, running_sshd

GOAL = {
    "kind": "import-profiles", "name": "small",
    "files": [{"name": "small", "directory": "in", "pattern": "c_*.csv.gpg"}],
    "stable_after_s": 0,
    "identifiers": [{"field": "customer_id", "property": "crm_id"}, {"field": "email", "property": "email"}],
    "mappings": [{"field": "name", "property": "name"}, {"field": "points", "property": "points", "rule": "sum"}],
}
BATCH = 1000  # file names per gpg --multifile call


def make_files(work: Path, keys_home: Path, recipient: str, count: int) -> Path:
    """Write `count` one-row CSV files and encrypt them with gpg --multifile; return their folder."""
    folder = work / "files"
    folder.mkdir()
    plain = []
    for i in range(count):
        path = folder / f"c_{i:05d}.csv"
        path.write_text(f"customer_id,email,name,points\nC{i},c{i}@example.com,Name {i},{i % 7}\n")
        plain.append(path)
    for start in range(0, count, BATCH):
        gpg(keys_home, "--trust-model", "always", "-z", "0", "--recipient", recipient, "--encrypt", "--multifile",
            *map(str, plain[start:start + BATCH]))
    for path in plain:
        path.unlink()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--profile", type=Path, help="write a py-spy profile (collapsed stacks) of the first run")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sftpc-small-")))
        sshd = stack.enter_context(running_sshd())
        keys = stack.enter_context(generated_keys(work / "keys"))
        pg_url = stack.enter_context(running_postgres()) if args.store == "postgresql" else None
        url = new_database(pg_url) if pg_url else f"sqlite:///{work}/store.db"
        folder = make_files(work, keys.sender_home, keys.connector_fpr, args.files)

        user = sshd.users["sftpc-key"]
        server = user.mkdir("small-bench")
        (server / "in").mkdir()
        old = time.time() - 3600
        for path in folder.iterdir():
            target = server / "in" / path.name
            shutil.move(path, target)
            os.chown(target, user.uid, user.gid)
            os.utime(target, (old, old))
        base = work / "deploy"
        base.mkdir()
        write_connector(base, sshd, SftpDir(user, server, user.remote("small-bench")), keys, url)
        (base / "goals" / "small.yaml").write_text(yaml.safe_dump(GOAL, sort_keys=False))

        raw = Raw(sshd, keys, work / "raw", args.store, None)
        stack.callback(raw.close)
        baseline = _baseline(raw, user.remote("small-bench") + "/in")
        command = [sys.executable, "-m", "sftp_connector", "--config", str(base / "connector.yaml"),
                   "--log-format", "plain", "run"]
        env = {"PYTHONPATH": str(ROOT), "TEST_PGP_PASSPHRASE": keys.passphrase}
        spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--threads", "--idle", "--rate", "100",
               "--format", "raw", "-o", str(args.profile), "--"] if args.profile else []
        first = timed([*spy, *command], cwd=base, env=env)
        again = timed(command, cwd=base, env=env)
        n = args.files
        print(f"\n{n:,} one-row encrypted files; {args.store}; {os.cpu_count()} cores; {_python()}\n")
        print("| stage | seconds | files/s | peak MiB | ratio |\n|---|---:|---:|---:|---:|")
        print(f"| baseline: sftp get + gpg --multifile | {baseline[0]:.2f} | {n / baseline[0]:,.0f} | "
              f"{baseline[1]:.0f} | |")
        print(f"| first run | {first[0]:.2f} | {n / first[0]:,.0f} | {first[1]:.0f} | {first[0] / baseline[0]:.2f}x |")
        print(f"| no change | {again[0]:.2f} | | {again[1]:.0f} | |")


def _baseline(raw: Raw, remote_dir: str) -> tuple[float, float]:
    """Fetch every file in one sftp session and decrypt them all with one gpg; return (seconds, peak MiB)."""
    local = raw.work / "get"
    local.mkdir()
    fetched = timed(raw._sftp(f"get {remote_dir}/* {local}/"))
    names = sorted(str(p) for p in local.iterdir())
    start, peak = time.perf_counter(), 0.0
    for i in range(0, len(names), BATCH):
        peak = max(peak, timed(["gpg", "--homedir", str(raw.home), "--batch", "--yes", "--pinentry-mode",
                                "loopback", "--passphrase", raw.keys.passphrase, "--decrypt", "--multifile",
                                *names[i:i + BATCH]])[1])
    return fetched[0] + time.perf_counter() - start, max(fetched[1], peak)


if __name__ == "__main__":
    main()
