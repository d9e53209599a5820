"""Measure sftp-connector against the raw tools in the same run, and print the ratios.

    .venv/bin/python -m benchmarks.bench [--rows 1000000] [--store sqlite,postgresql] [--memory-rows 5000000]
        [--loads-only] [--profile DIR [--profiler py-spy]]

Serves generated, gpg-encrypted customer files from a real OpenSSH sshd on 127.0.0.1 (as
the test suite does: needs root and scripts/setup --test). Every stage is a whole process,
timed with its peak memory (ru_maxrss from wait4). Stages:

  first load    `sftp-connector run` of N customers into an empty store
  merge load    the same customers in a second file, 10% of rows changed, every rule mixed
  small change  that second file again with 1% of rows changed (exactly-once: only those apply)
  no change     1,000 small files already imported (nothing may be downloaded)
  export        the N profiles of a segment to a CSV encrypted to the partner, uploaded atomically
  repeated      (--repeated) first loads of N rows where 1,000 profiles have N/1,000 rows each, and where one
                profile has N/10 rows, against the first load of N distinct rows (each into an empty store)
  baseline      OpenSSH sftp get + gpg --decrypt + polars read_csv + one-transaction upserts
                into a plain table (SQLite executemany / PostgreSQL COPY then INSERT … ON CONFLICT);
                for export the reverse: select into polars + write_csv, gpg --encrypt, sftp put
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from benchmarks import baseline
from tests.fixtures.connector import ROOT, write_connector
from tests.fixtures.gpg import PgpKeys, generated_keys
from tests.fixtures.postgres import new_database, running_postgres
from tests.fixtures.sshd import SftpDir, SshServer, running_sshd

GOAL = {
    "kind": "import-profiles",
    "name": "customers",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*.csv.gpg"}],
    "stable_after_s": 0,
    "max_reject_ratio": 0.01,
    "identifiers": [{"field": "customer_id", "property": "crm_id"}, {"field": "email", "property": "email"}],
    "mappings": [
        {"field": "first_name", "property": "first_name", "rule": "set"},
        {"field": "last_name", "property": "last_name", "rule": "set"},
        {"field": "phone", "property": "phone", "rule": "set_if_empty"},
        {"field": "country", "property": "country", "rule": "set"},
        {"field": "city", "property": "city", "rule": "set_or_clear"},
        {"field": "birth_date", "property": "birth_date", "rule": "set_if_empty"},
        {"field": "loyalty_points", "property": "loyalty_points", "rule": "sum"},
        {"field": "total_spent", "property": "total_spent", "rule": "sum"},
        {"field": "interests", "property": "interests", "rule": "add"},
        {"field": "updated_at", "property": "updated_at", "rule": "set"},
    ],
}
SMALL_GOAL = {**GOAL, "name": "small", "files": [{"name": "small", "directory": "small", "pattern": "*.csv"}]}
EXPORT_GOAL = {
    "kind": "export-profiles", "name": "segment", "segment": "customers", "directory": "out",
    "filename": "segment_{run}.csv", "changed_only": False,
    "columns": [{"column": "customer_id", "property": "crm_id"}, {"column": "email", "property": "email"},
                {"column": "first_name", "property": "first_name"}, {"column": "last_name", "property": "last_name"},
                {"column": "country", "property": "country"}, {"column": "city", "property": "city"},
                {"column": "loyalty_points", "property": "loyalty_points"},
                {"column": "interests", "property": "interests"}],
}
SEGMENTS = {"customers": {"property": "country", "in": ["NL", "BE", "DE", "FR"]}}


@dataclass(frozen=True, slots=True)
class Measure:
    stage: str
    seconds: float
    rows: int
    peak_mib: float
    baseline: float | None = None

    def row(self) -> str:
        rate = f"{self.rows / self.seconds:,.0f}" if self.rows and self.seconds else ""
        ratio = f"{self.seconds / self.baseline:.2f}x" if self.baseline else ""
        return f"| {self.stage} | {self.seconds:.2f} | {rate} | {self.peak_mib:.0f} | {ratio} |"


def timed(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a command as a whole process; return (seconds, peak MiB). Raise if it fails."""
    # /usr/bin/time forks from a small process: a fork of this one would count its memory as the child's.
    with tempfile.NamedTemporaryFile("r") as report, tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%M", *args], cwd=cwd,
                              env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=log, check=False)
        seconds = time.perf_counter() - start
        log.seek(0)
        if done.returncode != 0:
            raise RuntimeError(f"{args[:4]} failed: {log.read().decode()[-3000:]}")
        peak = int(report.read().split()[-1]) / 1024
    print(f"  {seconds:7.2f} s {peak:6.0f} MiB  {' '.join(args[:6])[:110]}", file=sys.stderr)
    return seconds, peak


def customers(rows: int, *, changed: float = 0.0, seed: int = 0, who: pl.Expr | None = None) -> pl.DataFrame:
    """Given a row count, return a realistic customer frame; `changed` of the rows differ by seed. `who` (an
    expression of the row number `i`) says which customer each row is (default: row i is customer i)."""
    row = pl.col("i")
    i = row if who is None else who
    flip = ((row * 7919 + seed) % 1000) < int(changed * 1000)
    pick = lambda values: pl.lit(pl.Series(values)).get(i % len(values))  # noqa: E731
    return pl.DataFrame({"i": pl.int_range(0, rows, eager=True)}).select(
        customer_id="C" + i.cast(pl.String),
        email="customer" + i.cast(pl.String) + "@example.com",
        first_name=pl.when(flip).then(pl.lit("Changed")).otherwise("First" + (i % 5000).cast(pl.String)),
        last_name="Last" + (i % 20000).cast(pl.String),
        phone=pl.when(i % 3 == 0).then(pl.lit(None)).otherwise("+31 6 " + (10000000 + i).cast(pl.String)),
        country=pick(["NL", "BE", "DE", "FR"]),
        city=pick(["Amsterdam", "Utrecht", "Gent", "Köln", "Lyon"]),
        birth_date="19" + (50 + i % 50).cast(pl.String) + "-0" + (1 + i % 9).cast(pl.String) + "-1"
        + (i % 10).cast(pl.String),
        loyalty_points=(row % 500 + pl.when(flip).then(seed + 1).otherwise(0)).cast(pl.String),
        total_spent=((row % 100000) / 100).cast(pl.String),
        interests=pl.lit(pl.Series(["books|chess", "travel", "cycling|books|wine", "", "music"])).get(row % 5),
        updated_at=pl.lit(f"2026-11-0{1 + seed % 9}"),
    )


def touched(frame: pl.DataFrame, share: float) -> pl.DataFrame:
    """Given a frame, return it with `share` of its rows (spread evenly) changed in two columns."""
    every = round(1 / share)
    hit = pl.int_range(0, pl.len()) % every == 0
    return frame.with_columns(
        first_name=pl.when(hit).then(pl.lit("Touched")).otherwise("first_name"),
        loyalty_points=pl.when(hit).then(pl.col("loyalty_points").cast(pl.Int64) + 1).otherwise(
            pl.col("loyalty_points").cast(pl.Int64)).cast(pl.String),
    )


@dataclass
class Bench:
    sshd: SshServer
    keys: PgpKeys
    work: Path
    rows: int

    def encrypted(self, frame: pl.DataFrame, name: str) -> Path:
        plain = self.work / name
        frame.write_csv(plain)
        target = self.work / (name + ".gpg")
        self.keys.gpg_encrypt(plain, target, recipient_fpr=self.keys.connector_fpr)
        plain.unlink()
        return target

    def deployment(self, store_url: str, label: str) -> tuple[Path, SftpDir]:
        user = self.sshd.users["sftpc-key"]
        user.mkdir(f"bench-{label}")
        remote = SftpDir(user, user.home / f"bench-{label}", user.remote(f"bench-{label}"))
        base = self.work / f"deploy-{label}"
        base.mkdir()
        write_connector(base, self.sshd, remote, self.keys, store_url, extra={
            "segments": SEGMENTS, "pgp": {"encrypt": {"recipients": ["keys/partner.public.asc"]}}})
        shutil.copy(self.keys.partner_public, base / "keys" / "partner.public.asc")
        for goal in (GOAL, SMALL_GOAL, EXPORT_GOAL):
            (base / "goals" / f"{goal['name']}.yaml").write_text(yaml.safe_dump(goal, sort_keys=False))
        return base, remote

    profile: Path | None = None
    profiler: str = "pyinstrument"

    def connector(self, base: Path, *goals: str, stage: str = "") -> tuple[float, float]:
        """Run `sftp-connector run GOALS` as a whole process (under a profiler with --profile)."""
        runner = [sys.executable, "-m", "sftp_connector"]
        if self.profile is not None and stage and self.profiler == "py-spy":
            # Sampling, every thread, collapsed stacks: slows the run far less than pyinstrument.
            spy = Path(sys.executable).with_name("py-spy")
            runner = [str(spy), "record", "--threads", "--idle", "--rate", "200", "--format", "raw", "-o",
                      str(self.profile / f"{stage}.folded"), "--", *runner]
        elif self.profile is not None and stage:
            runner = [sys.executable, "-m", "pyinstrument", "-o", str(self.profile / f"{stage}.txt"),
                      "-m", "sftp_connector"]
        return timed([*runner, "--config", str(base / "connector.yaml"), "--log-format", "plain", "run", *goals],
                     cwd=base, env={"PYTHONPATH": str(ROOT), "TEST_PGP_PASSPHRASE": self.keys.passphrase})


def drop(remote: SftpDir, name: str, source: Path, subdir: str = "in") -> None:
    remote.user.put(f"{remote.local.name}/{subdir}/{name}", source.read_bytes(), mtime=time.time() - 3600)


def run_store(
    bench: Bench, store: str, pg_url: str | None, files: dict[str, Path], *, loads_only: bool = False
) -> list[Measure]:
    """Run every stage (or only the first and merge loads) for one store; return the measures with their
    baselines."""
    url = new_database(pg_url) if store == "postgresql" and pg_url else f"sqlite:///{bench.work}/{store}.db"
    base, remote = bench.deployment(url, store)
    raw = baseline.Raw(bench.sshd, bench.keys, bench.work / f"raw-{store}", store,
                       new_database(pg_url) if pg_url and store == "postgresql" else None)
    try:
        return _stages(bench, store, files, base, remote, raw, loads_only=loads_only)
    finally:
        raw.close()


def _stages(bench: Bench, store: str, files: dict[str, Path], base: Path, remote: SftpDir, raw: baseline.Raw, *,
            loads_only: bool) -> list[Measure]:
    n = bench.rows
    out = []
    drop(remote, "customers_1.csv.gpg", files["first"])
    first_base = raw.load(remote.remote + "/in/customers_1.csv.gpg")
    out.append(Measure(f"baseline first load ({store})", *first_base[:1], n, first_base[1]))
    secs, peak = bench.connector(base, "customers", stage=f"first-load-{store}")
    out.append(Measure(f"first load ({store})", secs, n, peak, first_base[0]))
    drop(remote, "customers_2.csv.gpg", files["merge"])
    merge_base = raw.load(remote.remote + "/in/customers_2.csv.gpg")
    out.append(Measure(f"baseline merge load ({store})", merge_base[0], n, merge_base[1]))
    secs, peak = bench.connector(base, "customers", stage=f"merge-load-{store}")
    merge_secs = secs
    out.append(Measure(f"merge load ({store})", secs, n, peak, merge_base[0]))
    if loads_only:
        return out
    drop(remote, "customers_2.csv.gpg", files["small"])
    secs, peak = bench.connector(base, "customers", stage=f"small-change-{store}")
    out.append(Measure(f"small change, 1% ({store}) vs merge load", secs, n, peak, merge_secs))
    for k in range(1000):
        remote.user.put(f"{remote.local.name}/small/s_{k:04d}.csv", files["tiny"].read_bytes(),
                        mtime=time.time() - 3600)
    bench.connector(base, "small")
    secs, peak = bench.connector(base, "small", stage=f"no-change-{store}")
    out.append(Measure(f"no change, 1,000 files ({store})", secs, 0, peak))
    remote.user.mkdir(f"{remote.local.name}/out")
    export_base = raw.export(remote.remote + "/out/baseline.csv.gpg")
    out.append(Measure(f"baseline export ({store})", export_base[0], n, export_base[1]))
    secs, peak = bench.connector(base, "segment", stage=f"export-{store}")
    out.append(Measure(f"export ({store})", secs, n, peak, export_base[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--store", default="sqlite,postgresql")
    parser.add_argument("--memory-rows", type=int, default=0, help="also a first load of this many rows (5M)")
    parser.add_argument("--profile", type=Path, help="write pyinstrument profiles of the loads to this folder")
    parser.add_argument("--profiler", choices=["pyinstrument", "py-spy"], default="pyinstrument",
                        help="py-spy samples every thread with little slowdown (pip install py-spy)")
    parser.add_argument("--loads-only", action="store_true", help="only the first and merge loads")
    parser.add_argument("--repeated", action="store_true",
                        help="only first loads of distinct rows and of rows that revisit profiles")
    args = parser.parse_args()
    stores = args.store.split(",")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sftpc-bench-")))
        sshd = stack.enter_context(running_sshd())
        keys = stack.enter_context(generated_keys(work / "keys"))
        pg_url = stack.enter_context(running_postgres()) if "postgresql" in stores else None
        bench = Bench(sshd, keys, work, args.rows, args.profile, args.profiler)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        if args.repeated:
            measures = [m for store in stores for m in repeated(bench, store, pg_url)]
            _table(args.rows, measures)
            return
        files = {
            "first": bench.encrypted(customers(args.rows), "customers_1.csv"),
            "merge": bench.encrypted(customers(args.rows, changed=0.10, seed=1), "customers_2.csv"),
            "small": bench.encrypted(touched(customers(args.rows, changed=0.10, seed=1), 0.01), "customers_2b.csv"),
            "tiny": _tiny(work),
        }
        measures: list[Measure] = []
        for store in stores:
            measures += run_store(bench, store, pg_url, files, loads_only=args.loads_only)
        if args.memory_rows:
            measures += memory(bench, args.rows, args.memory_rows)
        _table(args.rows, measures)


def _table(rows: int, measures: list[Measure]) -> None:
    print(f"\n{rows:,} rows; {os.cpu_count()} cores; {_python()}\n")
    print("| stage | seconds | rows/s | peak MiB | ratio |\n|---|---:|---:|---:|---:|")
    for measure in measures:
        print(measure.row())


def repeated(bench: Bench, store: str, pg_url: str | None) -> list[Measure]:
    """First loads, each into an empty store: N distinct rows, then N rows of 1,000 profiles, then N rows one
    profile of which has N/10; the ratios are against the distinct rows."""
    n, i = bench.rows, pl.col("i")
    shapes = [("distinct rows", None), ("1,000 profiles x N/1,000 rows", i % 1000),
              (f"one profile with {n // 10:,} rows", pl.when(i < n // 10).then(0).otherwise(i))]
    out: list[Measure] = []
    for number, (label, who) in enumerate(shapes):
        source = bench.encrypted(customers(n, who=who), f"repeated_{number}.csv")
        url = new_database(pg_url) if store == "postgresql" and pg_url else f"sqlite:///{bench.work}/rep-{number}.db"
        base, remote = bench.deployment(url, f"repeated-{store}-{number}")
        drop(remote, "customers_1.csv.gpg", source)
        secs, peak = bench.connector(base, "customers", stage=f"repeated-{number}-{store}")
        out.append(Measure(f"first load, {label} ({store})", secs, n, peak, out[0].seconds if out else None))
        source.unlink()
    return out


def memory(bench: Bench, small: int, big: int) -> list[Measure]:
    """First loads of `small` and `big` rows into fresh SQLite stores: peak memory must not grow."""
    out = []
    for rows in (small, big):
        source = bench.encrypted(customers(rows), f"customers_{rows}.csv")
        base, remote = bench.deployment(f"sqlite:///{bench.work}/memory-{rows}.db", f"memory-{rows}")
        drop(remote, "customers_1.csv.gpg", source)
        secs, peak = bench.connector(base, "customers")
        out.append(Measure(f"first load, {rows:,} rows (sqlite), peak memory", secs, rows, peak))
        source.unlink()
        shutil.rmtree(remote.local, ignore_errors=True)
    out.append(Measure("peak memory ratio big/small (as seconds column)", out[1].peak_mib / out[0].peak_mib, 0, 0))
    return out


def _tiny(work: Path) -> Path:
    path = work / "tiny.csv"
    customers(10).write_csv(path)
    return path


def _python() -> str:
    return f"Python {sys.version.split()[0]}, polars {pl.__version__}, max RSS of this process " \
           f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


if __name__ == "__main__":
    main()
