"""The raw baseline: what the same import costs with the tools alone, each stage a whole process.

OpenSSH `sftp` get → `gpg --decrypt` → one Python process: polars `read_csv`, then upserts in
one transaction into a plain table (SQLite `executemany` with `ON CONFLICT DO UPDATE`;
PostgreSQL `COPY` into a temp table, then `INSERT … ON CONFLICT`).

    python -m benchmarks.baseline upsert FILE.csv STORE_URL     (the last import stage, used by Raw)
    python -m benchmarks.baseline select STORE_URL FILE.csv     (the first export stage, used by Raw)

The export baseline is the reverse: select the segment's rows into polars and `write_csv`,
`gpg --encrypt` to the partner, OpenSSH `sftp put`.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sftp_connector.pgp.keys import AGENT_CONF
from tests.fixtures.gpg import PgpKeys, gpg
from tests.fixtures.sshd import SshServer

COLUMNS = ["customer_id", "email", "first_name", "last_name", "phone", "country", "city", "birth_date",
           "loyalty_points", "total_spent", "interests", "updated_at"]
TABLE = ("CREATE TABLE IF NOT EXISTS customers (customer_id TEXT PRIMARY KEY, email TEXT, first_name TEXT, "
         "last_name TEXT, phone TEXT, country TEXT, city TEXT, birth_date TEXT, loyalty_points DOUBLE PRECISION, "
         "total_spent DOUBLE PRECISION, interests TEXT, updated_at TEXT)")
UPDATE = ("ON CONFLICT (customer_id) DO UPDATE SET email = excluded.email, first_name = excluded.first_name, "
          "last_name = excluded.last_name, phone = COALESCE(customers.phone, excluded.phone), "
          "country = excluded.country, city = excluded.city, "
          "birth_date = COALESCE(customers.birth_date, excluded.birth_date), "
          "loyalty_points = customers.loyalty_points + excluded.loyalty_points, "
          "total_spent = customers.total_spent + excluded.total_spent, "
          "interests = COALESCE(excluded.interests, customers.interests), updated_at = excluded.updated_at")


@dataclass
class Raw:
    """The baseline pipeline for one store, with its own download folder and GnuPG home."""

    sshd: SshServer
    keys: PgpKeys
    work: Path
    store: str
    pg_url: str | None

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True)
        self.home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
        (self.home / "gpg-agent.conf").write_text(AGENT_CONF)  # the key's copy protected at the connector's cost
        gpg(self.home, "--import", str(self.keys.connector_private), passphrase=self.keys.passphrase)
        gpg(self.home, "--import", str(self.keys.partner_public))

    def close(self) -> None:
        """Stop the gpg-agent of the baseline's GnuPG home and remove it (agents outlive gpg otherwise)."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.home, ignore_errors=True)

    @property
    def url(self) -> str:
        return self.pg_url or f"sqlite:///{self.work / 'baseline.db'}"

    def _sftp(self, command: str) -> list[str]:
        batch = self.work / "batch"
        batch.write_text(command + "\n")
        user = self.sshd.users["sftpc-key"]
        return ["sftp", "-q", "-b", str(batch), "-P", str(self.sshd.port), "-i", str(self.sshd.keys["ed25519"]),
                "-o", f"UserKnownHostsFile={self.sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "Compression=no", f"{user.username}@{self.sshd.host}"]

    def export(self, remote_path: str) -> tuple[float, float]:
        """Given where to put it, export the baseline table's segment rows encrypted; return (seconds, max peak MiB)."""
        from benchmarks.bench import timed

        plain = self.work / "export.csv"
        encrypted = self.work / "export.csv.gpg"
        stages = [
            [sys.executable, "-m", "benchmarks.baseline", "select", self.url, str(plain)],
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--trust-model", "always", "--output",
             str(encrypted), "--encrypt", "--recipient", self.keys.partner_fpr, str(plain)],
            self._sftp(f"put {encrypted} {remote_path}"),
        ]
        results = [timed(stage) for stage in stages]
        plain.unlink()
        encrypted.unlink()
        return sum(r[0] for r in results), max(r[1] for r in results)

    def load(self, remote_path: str) -> tuple[float, float]:
        """Given a remote encrypted CSV, run the three stages; return (total seconds, max peak MiB)."""
        from benchmarks.bench import timed

        local = self.work / "download.csv.gpg"
        plain = self.work / "plain.csv"
        stages = [
            self._sftp(f"get {remote_path} {local}"),
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--pinentry-mode", "loopback",
             "--passphrase", self.keys.passphrase, "--output", str(plain), "--decrypt", str(local)],
            [sys.executable, "-m", "benchmarks.baseline", "upsert", str(plain), self.url],
        ]
        results = [timed(stage) for stage in stages]
        local.unlink()
        plain.unlink()
        return sum(r[0] for r in results), max(r[1] for r in results)


def upsert(path: Path, url: str) -> None:
    """Given a CSV and a store URL, read the CSV with polars and upsert every row in one transaction."""
    frame = pl.read_csv(path, infer_schema=False).with_columns(
        pl.col("loyalty_points", "total_spent").cast(pl.Float64))
    if url.startswith("sqlite:///"):
        _sqlite(frame, url.removeprefix("sqlite:///"))
    else:
        _postgres(frame, url)


def _sqlite(frame: pl.DataFrame, path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(TABLE)
    conn.execute("BEGIN")
    marks = ", ".join("?" * len(COLUMNS))
    conn.executemany(f"INSERT INTO customers VALUES ({marks}) {UPDATE}", frame.select(COLUMNS).iter_rows())
    conn.execute("COMMIT")
    conn.close()


def _postgres(frame: pl.DataFrame, url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(TABLE)
        conn.execute("CREATE TEMP TABLE incoming (LIKE customers) ON COMMIT DROP")
        with conn.cursor().copy(f"COPY incoming ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in frame.select(COLUMNS).iter_rows():
                copy.write_row(row)
        conn.execute(f"INSERT INTO customers SELECT * FROM incoming {UPDATE}")


SEGMENT = ("SELECT customer_id, email, first_name, last_name, country, city, loyalty_points, interests "
           "FROM customers WHERE country IN ('NL', 'BE', 'DE', 'FR') ORDER BY customer_id")


def select(url: str, path: Path) -> None:
    """Given a store URL and a CSV path, write the segment's rows there with polars."""
    if url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
    else:
        import psycopg

        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    cursor = conn.cursor()
    cursor.execute(SEGMENT)
    names = [d[0] for d in cursor.description]
    frame = pl.DataFrame(cursor.fetchall(), schema=names, orient="row")
    frame.write_csv(path)
    conn.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "upsert":
        upsert(Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "select":
        select(sys.argv[2], Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
