"""Exports over the real sshd and gpg: import, export, download with paramiko, decrypt with the gpg
command line as the partner, parse with the csv module and compare; changed_only watermarks; a
connection broken mid-upload leaves nothing behind; events files; dry runs."""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path
from typing import Any

import paramiko
import polars as pl
import pytest

from sftp_connector.config import models
from sftp_connector.goals import export_files
from sftp_connector.store import db, export_reads, queries
from tests.fixtures.connector import Deployment
from tests.fixtures.proxy import CuttingProxy
from tests.fixtures.sshd import SshServer

OLD = time.time() - 3600

IMPORT = {
    "kind": "import-profiles", "name": "crm",
    "files": [{"name": "customers", "directory": "in", "pattern": "customers_*.csv"}],
    "stable_after_s": 0,
    "identifiers": [{"field": "email", "property": "email"}, {"field": "id", "property": "crm_id"}],
    "mappings": [{"field": "newsletter", "property": "newsletter"}, {"field": "interests", "property": "interests",
                                                                      "rule": "add"},
                 {"field": "points", "property": "points", "rule": "sum"},
                 {"field": "permission", "property": "permission_level"}],
}
CUSTOMERS = """\
id,email,newsletter,interests,points,permission
C1,ada@x.com,yes,books|chess,10,opt-in
C2,bob@x.com,no,cycling,5,opt-out
C3,cy@x.com,yes,,7,opt-in
C4,,yes,travel,1,
"""
EXPORT: dict[str, Any] = {
    "kind": "export-profiles", "name": "newsletter", "segment": "newsletter", "directory": "out",
    "filename": "newsletter_{run}.csv",
    "columns": [
        {"column": "id", "value": "profile_id"},
        {"column": "email", "property": "email"},
        {"column": "interests", "property": "interests"},
        {"column": "points", "property": "points"},
        {"column": "segments", "value": "segments"},
        {"column": "vip", "segments": ["big"]},
        {"column": "permission", "value": "permission_level"},
        {"column": "source", "text": "crm-sync"},
    ],
}
SEGMENTS = {
    "newsletter": {"all": [{"property": "newsletter", "equals": "yes"}, {"property": "email", "exists": True}]},
    "big": {"property": "points", "gte": 7},
}


@pytest.fixture
def exporting(deployment: Deployment) -> Deployment:
    """The deployment with the partner as export recipient, the segments, and the import goal with its file."""
    shutil.copy(deployment.keys.partner_public, deployment.dir / "keys" / "partner.public.asc")
    deployment.update_connector({"pgp": {"encrypt": {"recipients": ["keys/partner.public.asc"]}},
                                 "segments": SEGMENTS})
    deployment.write_goal("crm", IMPORT)
    deployment.put("in/customers_1.csv", CUSTOMERS, mtime=OLD)
    return deployment


def download(deployment: Deployment, sshd: SshServer, remote_path: str) -> bytes:
    """Fetch a remote file with paramiko, verifying the host key, as a partner's script would."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(sshd.host, port=sshd.port, username=deployment.remote.user.username,
                   key_filename=str(sshd.keys["ed25519"]), look_for_keys=False, allow_agent=False, timeout=10)
    try:
        with client.open_sftp() as sftp, sftp.open(remote_path, "rb") as handle:
            return handle.read()
    finally:
        client.close()


def decrypted_rows(deployment: Deployment, sshd: SshServer, remote_path: str) -> list[list[str]]:
    """Download, decrypt as the partner with the gpg command line, and parse with the csv module."""
    encrypted = deployment.dir / "fetched.gpg"
    encrypted.write_bytes(download(deployment, sshd, remote_path))
    plain = deployment.dir / "fetched.csv"
    deployment.keys.gpg_decrypt_as_partner(encrypted, plain)
    rows = list(csv.reader(io.StringIO(plain.read_text(encoding="utf-8"), newline="")))
    encrypted.unlink()
    plain.unlink()
    return rows


def exported(result: Any, goal: str = "newsletter") -> list[Any]:
    return [f for g in result.goals if g.goal == goal for f in g.files]


def remote_names(deployment: Deployment, folder: str = "out") -> list[str]:
    path = deployment.remote_path(folder)
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_round_trip_in_column_order(exporting: Deployment, sshd: SshServer) -> None:
    exporting.write_goal("newsletter", EXPORT)
    result = exporting.run()
    assert result.status == "success", result
    [file] = exported(result)
    assert file.status == "exported" and file.rows_exported == 2
    assert file.path == f"{exporting.remote.remote}/out/newsletter_{result.run}.csv.gpg"
    ids = {p["properties"]["crm_id"][0]: str(p["id"]) for p in exporting.profiles()}
    assert decrypted_rows(exporting, sshd, file.path) == [
        ["id", "email", "interests", "points", "segments", "vip", "permission", "source"],
        [ids["C1"], "ada@x.com", "books|chess", "10", "newsletter|big", "big", "opt-in", "crm-sync"],
        [ids["C3"], "cy@x.com", "", "7", "newsletter|big", "big", "opt-in", "crm-sync"],
    ]
    assert remote_names(exporting) == [f"newsletter_{result.run}.csv.gpg"]
    assert result.goals[-1].unique_profiles_exchanged == 2


def test_changed_only_exports_exactly_the_profiles_changed_since(exporting: Deployment, sshd: SshServer) -> None:
    exporting.write_goal("newsletter", EXPORT)
    first = exporting.run()
    assert exported(first)[0].rows_exported == 2
    nothing = exporting.run()
    assert exported(nothing) == [] and nothing.status == "success"
    exporting.put("in/customers_2.csv", "id,email,newsletter,interests,points,permission\nC3,cy@x.com,yes,art,1,\n"
                  "C2,bob@x.com,yes,,,\n", mtime=OLD)
    second = exporting.run()
    [file] = exported(second)
    rows = decrypted_rows(exporting, sshd, file.path)
    assert [r[1] for r in rows[1:]] == ["bob@x.com", "cy@x.com"]
    assert rows[2][2:4] == ["art", "8"]
    exporting.write_goal("newsletter", {**EXPORT, "changed_only": False, "filename": "full_{run}.csv"})
    [full] = exported(exporting.run())
    assert [r[1] for r in decrypted_rows(exporting, sshd, full.path)[1:]] == ["ada@x.com", "bob@x.com", "cy@x.com"]


def test_a_connection_broken_mid_upload_leaves_nothing_and_the_next_run_resends(
    exporting: Deployment, sshd: SshServer
) -> None:
    # Enough incompressible rows that the encrypted file is far larger than what the proxy lets through.
    import hashlib

    rows = "".join(f"X{i},x{i}@example.com,yes,{hashlib.sha256(str(i).encode()).hexdigest()},1,opt-in\n"
                   for i in range(4000))
    exporting.put("in/customers_2.csv", "id,email,newsletter,interests,points,permission\n" + rows, mtime=OLD)
    exporting.write_goal("newsletter", EXPORT)
    assert exporting.run("crm").status == "success"
    with CuttingProxy(sshd.host, sshd.port, cut_after=96 * 1024) as proxy:
        exporting.update_connector({"sftp": {"port": proxy.port, "known_hosts": None,
                                             "host_key_fingerprint": sshd.fingerprint}})
        broken = exporting.run("newsletter")
    assert proxy.cuts >= 1
    assert broken.status == "failed"
    assert "newsletter" in (broken.goals[0].error or "")
    assert remote_names(exporting) == []  # neither the file nor its temporary name
    exporting.update_connector({"sftp": {"port": sshd.port}})
    again = exporting.run("newsletter")
    assert again.status == "success", again
    [file] = exported(again)
    assert file.rows_exported == 4002  # the same profiles: the watermark did not move
    assert remote_names(exporting) == [file.path.rsplit("/", 1)[1]]


def test_events_export_one_file_per_type_and_nested_beside_it(exporting: Deployment, sshd: SshServer) -> None:
    exporting.write_goal("orders", {
        "kind": "import-profiles", "name": "orders", "order": 5,
        "files": [{"name": "orders", "directory": "in/orders", "pattern": "orders_*.csv"},
                  {"name": "lines", "directory": "in/orders", "pattern": "lines_*.csv",
                   "link": {"parent": "order_id", "child": "order_id"}}],
        "stable_after_s": 0, "allow_new_profiles": False,
        "identifiers": [{"field": "email", "property": "email"}],
        "events": [{"type": "order", "id": "order_id", "time": "at", "properties": {"total": "amount"},
                    "nested": [{"name": "products", "file": "lines", "properties": {"sku": "sku"}}]}],
    })
    exporting.put("in/orders/orders_1.csv", "order_id,email,amount,at\nO1,ada@x.com,5,2026-11-01\n"
                  "O2,bob@x.com,6,2026-11-02\nO3,cy@x.com,7,2020-01-01\n", mtime=OLD)
    exporting.put("in/orders/lines_1.csv", "order_id,sku\nO1,A\nO1,B\nO3,C\n", mtime=OLD)
    exporting.write_goal("newsletter", {**EXPORT, "events": {"types": ["order"], "since": "2026-01-01"}})
    result = exporting.run()
    assert result.status == "success", result
    files = {f.path.rsplit("/", 1)[1]: f for f in exported(result)}
    stem = f"newsletter_{result.run}"
    assert sorted(files) == sorted([f"{stem}.csv.gpg", f"{stem}_order.csv.gpg", f"{stem}_order_products.csv.gpg"])
    ada = next(str(p["id"]) for p in exporting.profiles() if p["properties"].get("email") == ["ada@x.com"])
    assert decrypted_rows(exporting, sshd, files[f"{stem}_order.csv.gpg"].path) == [
        ["profile_id", "id", "time", "total"], [ada, "O1", "2026-11-01T00:00:00Z", "5"]]  # bob: not in the segment
    assert decrypted_rows(exporting, sshd, files[f"{stem}_order_products.csv.gpg"].path) == [
        ["order_id", "sku"], ["O1", "A"], ["O1", "B"]]


def test_dry_run_prints_what_would_be_exported_and_uploads_nothing(exporting: Deployment) -> None:
    exporting.write_goal("newsletter", EXPORT)
    assert exporting.run("crm").status == "success"
    done = exporting.cli("--log-format", "plain", "run", "newsletter", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would export 2 row(s)" in done.stderr and "ada@x.com" in done.stderr
    assert remote_names(exporting) == []
    assert exported(exporting.run("newsletter"))[0].rows_exported == 2  # the watermark did not move


def test_if_exists_empty_and_privacy(exporting: Deployment, sshd: SshServer) -> None:
    exporting.write_goal("newsletter", {**EXPORT, "filename": "fixed.csv", "changed_only": False})
    assert exporting.run().status == "success"
    clash = exporting.run("newsletter")
    assert clash.status == "failed" and "already exists" in (clash.goals[0].error or "")
    exporting.write_goal("newsletter", {**EXPORT, "filename": "fixed.csv", "changed_only": False,
                                        "if_exists": "overwrite"})
    assert exporting.run("newsletter").status == "success"
    # With objectives, only consenting profiles leave: nobody has consented yet.
    exporting.update_connector({"privacy": {"objectives": ["marketing"]}})
    exporting.write_goal("newsletter", {**EXPORT, "filename": "empty.csv", "changed_only": False,
                                        "export_empty": True})
    [empty] = exported(exporting.run("newsletter"))
    assert empty.rows_exported == 0
    assert decrypted_rows(exporting, sshd, empty.path) == [
        ["id", "email", "interests", "points", "segments", "vip", "permission", "source"]]


def test_plaintext_export_when_encryption_is_off(exporting: Deployment, sshd: SshServer, tmp_path: Path) -> None:
    exporting.write_goal("newsletter", {**EXPORT, "encrypt": False, "csv": {"delimiter": ";"},
                                        "filename": "{goal}_{now:%Y}.csv"})
    [file] = exported(exporting.run())
    assert file.path.endswith(f"/out/newsletter_{time.gmtime().tm_year}.csv")
    text = download(exporting, sshd, file.path).decode()
    assert text.splitlines()[0] == "id;email;interests;points;segments;vip;permission;source"


def test_signed_armored_export_to_a_fingerprint(exporting: Deployment, sshd: SshServer) -> None:
    exporting.cli("keys", "import", str(exporting.keys.partner_public))
    exporting.update_connector({"pgp": {"encrypt": {"recipients": [exporting.keys.partner_fpr], "sign": True,
                                                    "armor": True}}})
    exporting.write_goal("newsletter", EXPORT)
    [file] = exported(exporting.run())
    assert file.path.endswith(".csv.asc")
    armored = download(exporting, sshd, file.path)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
    encrypted, plain = exporting.dir / "got.asc", exporting.dir / "got.csv"
    encrypted.write_bytes(armored)
    assert exporting.keys.gpg_decrypt_as_partner(encrypted, plain) == exporting.keys.connector_fpr
    assert plain.read_text().splitlines()[0].startswith("id,email,")


def test_only_consenting_profiles_with_an_exported_value_leave(exporting: Deployment, sshd: SshServer) -> None:
    exporting.update_connector({"privacy": {"objectives": ["marketing", "research"]}})
    exporting.write_goal("consent", {
        "kind": "import-profiles", "name": "consent", "order": -1,
        "files": [{"name": "consent", "directory": "in", "pattern": "consent_*.csv"}], "stable_after_s": 0,
        "identifiers": [{"field": "id", "property": "crm_id"}],
        "mappings": [{"field": "consent", "property": "consented_objectives", "rule": "add"}],
    })
    # C3 consents to research; C1 consents to something else; C5 consents but holds no exported property.
    exporting.put("in/consent_1.csv", "id,consent\nC3,research\nC1,sales\nC5,marketing\n", mtime=OLD)
    exporting.write_goal("newsletter", {**EXPORT, "segment": None, "columns": [
        {"column": "email", "property": "email"}, {"column": "newsletter", "property": "newsletter"}]})
    result = exporting.run()
    assert result.status == "success", result
    rows = decrypted_rows(exporting, sshd, exported(result)[0].path)
    # C3 was found by crm_id, so its email (an identifier) is not written to it: only newsletter is held.
    assert rows == [["email", "newsletter"], ["", "yes"]]


def test_formulas_are_neutralised_when_asked(exporting: Deployment, sshd: SshServer) -> None:
    exporting.put("in/customers_2.csv", "id,email,newsletter,interests,points,permission\n"
                  "C9,=cmd|' /C calc'!A0,yes,+31|@SUM(A1)|-x|-5,3,=1+1\n", mtime=OLD)
    columns = [{"column": "email", "property": "email"}, {"column": "interests", "property": "interests"},
               {"column": "permission", "value": "permission_level"}]
    exporting.write_goal("newsletter", {**EXPORT, "segment": None, "columns": columns, "changed_only": False,
                                        "csv": {"escape_formulas": True, "multi_value_separator": ";"}})
    [file] = exported(exporting.run())
    rows = decrypted_rows(exporting, sshd, file.path)
    assert ["'=cmd|' /C calc'!A0", "'+31;@SUM(A1);-x;-5", "'=1+1"] in rows
    exporting.write_goal("newsletter", {**EXPORT, "segment": None, "columns": columns, "changed_only": False,
                                        "filename": "raw_{run}.csv"})
    [raw] = exported(exporting.run("newsletter"))
    assert ["=cmd|' /C calc'!A0", "+31|@SUM(A1)|-x|-5", "=1+1"] in decrypted_rows(exporting, sshd, raw.path)


def test_pages_of_profiles_come_in_id_order_with_nulls_and_flags(exporting: Deployment) -> None:
    assert exporting.run("crm").status == "success"
    store = db.open_store(exporting.store_url)
    try:
        with store.engine.connect() as conn:
            columns = queries.all_property_columns(conn)
            picks = [f"p.{columns['email']}", f"p.{columns['interests']}", "NULL",
                     f"(CASE WHEN p.{columns['newsletter']} = '[\"yes\"]' THEN 1 ELSE 0 END)"]
            schema = export_files.page_schema(["email", "interests", "absent"], ["newsletter"])
            pages = list(export_reads.profile_pages(conn, picks=picks, where="1=1", params={}, schema=schema,
                                                     page=3))
    finally:
        store.dispose()
    assert [page.height for page in pages] == [3, 1]
    rows = pl.concat(pages).rows()
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)
    assert [row[1:] for row in rows] == [
        ('["ada@x.com"]', '["books","chess"]', None, 1),
        ('["bob@x.com"]', '["cycling"]', None, 0),
        ('["cy@x.com"]', None, None, 1),
        (None, '["travel"]', None, 1),
    ]


def test_a_selection_reads_the_profiles_and_events_it_names(exporting: Deployment) -> None:
    day = 86_400
    exporting.write_goal("orders", {
        "kind": "import-profiles", "name": "orders", "order": 5,
        "files": [{"name": "orders", "directory": "in/orders", "pattern": "orders_*.csv"}],
        "stable_after_s": 0, "allow_new_profiles": False, "identifiers": [{"field": "email", "property": "email"}],
        "events": [{"type": "order", "id": "order_id", "time": "at"}],
    })
    at = [time.strftime("%Y-%m-%d", time.gmtime(time.time() - days * day)) for days in (5, 100)]
    exporting.put("in/orders/orders_1.csv", f"order_id,email,at\nO1,ada@x.com,{at[0]}\nO2,ada@x.com,{at[1]}\n"
                  f"O3,cy@x.com,{at[0]}\n", mtime=OLD)
    assert exporting.run().status == "success"
    segments = {name: models.Condition.model_validate(c) for name, c in SEGMENTS.items()}
    store = db.open_store(exporting.store_url)

    def read(**named: Any) -> tuple[list[tuple[Any, ...]], list[str]]:
        chosen = export_reads.Selection(segments=segments, segment="newsletter", **named)
        with store.connection() as conn:
            query = export_reads.query(store, conn, chosen)
            schema = export_files.page_schema(list(chosen.properties), list(chosen.flags))
            rows = [row[1:] for page in export_reads.pages(conn, query, schema) for row in page.rows()]
            events = [row[1] for row in export_reads.events_of(conn, query, "order", since_days=30)]
        return rows, events

    try:
        everyone = read(properties=("email", "absent"), flags=("big",))
        holding_none = read(properties=("email",), holding=("absent",))
        holding_one = read(properties=("email",), holding=("absent", "interests"))
        later = read(changed_after=time.time() + 60)
    finally:
        store.dispose()
    assert everyone == ([('["ada@x.com"]', None, 1), ('["cy@x.com"]', None, 1)], ["O1", "O3"])
    assert holding_none == ([], ["O1", "O3"])  # events follow the segment, not the columns' test
    assert holding_one == ([('["ada@x.com"]',)], ["O1", "O3"])
    assert later == ([], [])
