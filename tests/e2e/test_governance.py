"""Sync modes and governance over the real sshd and gpg, on both stores: overwrite, erasure requests,
data-usage labels, Parquet exports."""

from __future__ import annotations

import io
import shutil
import time
from typing import Any

import polars as pl
import pytest

from sftp_connector.errors import ConfigError
from tests.e2e.test_export import download, exported
from tests.fixtures.connector import Deployment
from tests.fixtures.sshd import SshServer

OLD = time.time() - 3600

CRM: dict[str, Any] = {
    "kind": "import-profiles", "name": "crm",
    "files": [{"name": "crm", "directory": "in/crm", "pattern": "crm_*.csv"}], "stable_after_s": 0,
    "identifiers": [{"field": "email", "property": "email"}],
    "groups": [{"type": "household", "field": "household"}],
    "mappings": [{"field": "tier", "property": "tier"}, {"field": "points", "property": "points", "rule": "sum"},
                 {"field": "tags", "property": "tags", "rule": "add"}],
}
SHOP: dict[str, Any] = {
    "kind": "import-profiles", "name": "shop", "order": 1,
    "files": [{"name": "shop", "directory": "in/shop", "pattern": "shop_*.csv"}], "stable_after_s": 0,
    "identifiers": [{"field": "email", "property": "email"}],
    "mappings": [{"field": "city", "property": "city"}, {"field": "points", "property": "points", "rule": "sum"}],
}


def by_email(deployment: Deployment) -> dict[str, dict[str, Any]]:
    return {p["properties"]["email"][0]: p for p in deployment.profiles() if "email" in p["properties"]}


def test_labels_refuse_an_export_at_validate_and_at_run(deployment: Deployment) -> None:
    deployment.update_connector({"labels": {"email": ["pii", "contact"], "birth_date": ["pii", "sensitive"]}})
    deployment.write_goal("out", {"kind": "export-profiles", "name": "out", "deny_labels": ["sensitive"],
                                  "columns": [{"column": "email", "property": "email"},
                                              {"column": "born", "property": "birth_date"}]})
    done = deployment.cli("validate")
    assert done.returncode == 2
    assert ("goals/out.yaml: export goal out: column born reads property birth_date, labelled sensitive, which its "
            "deny_labels refuse") in done.stderr
    assert deployment.cli("run", "out").returncode == 2
    deployment.write_goal("out", {"kind": "export-profiles", "name": "out", "deny_labels": ["sensitive"],
                                  "columns": [{"column": "email", "property": "email"}]})
    assert deployment.cli("validate").returncode == 0
    deployment.update_connector({"labels": {"email": ["sensitive"]}})
    with pytest.raises(ConfigError, match="column email reads property email, labelled sensitive"):
        deployment.config()


def test_parquet_export_reads_back_with_polars_after_gpg(deployment: Deployment, sshd: SshServer) -> None:
    shutil.copy(deployment.keys.partner_public, deployment.dir / "keys" / "partner.public.asc")
    deployment.update_connector({"pgp": {"encrypt": {"recipients": ["keys/partner.public.asc"]}},
                                 "segments": {"gold": {"property": "tier", "equals": "gold"}}})
    deployment.write_goal("crm", {**CRM, "events": [{"type": "visit", "id": "visit", "time": "at",
                                                     "properties": {"page": "page"}}]})
    deployment.put("in/crm/crm_1.csv", "email,tier,points,tags,household,visit,at,page\n"
                   "a@x.com,gold,10,x|y,H1,V1,2026-11-01,/home\nb@x.com,silver,5,z,,V2,2026-11-02,/cart\n", mtime=OLD)
    deployment.write_goal("out", {
        "kind": "export-profiles", "name": "out", "format": "parquet", "filename": "out_{run}.csv",
        "events": {"types": "all"},
        "columns": [{"column": "id", "value": "profile_id"}, {"column": "email", "property": "email"},
                    {"column": "tags", "property": "tags"}, {"column": "points", "property": "points"},
                    {"column": "segments", "value": "segments"}, {"column": "source", "text": "crm"}]})
    result = deployment.run()
    assert result.status == "success", result
    files = {f.path.rsplit("/", 1)[1]: f for f in exported(result, "out")}
    assert sorted(files) == [f"out_{result.run}.parquet.gpg", f"out_{result.run}_visit.parquet.gpg"]

    def read(name: str) -> pl.DataFrame:
        encrypted, plain = deployment.dir / "x.gpg", deployment.dir / "x.parquet"
        encrypted.write_bytes(download(deployment, sshd, files[name].path))
        deployment.keys.gpg_decrypt_as_partner(encrypted, plain)
        return pl.read_parquet(io.BytesIO(plain.read_bytes()))

    profiles = read(f"out_{result.run}.parquet.gpg")
    assert profiles.schema == pl.Schema({"id": pl.Int64, "email": pl.List(pl.String), "tags": pl.List(pl.String),
                                         "points": pl.List(pl.String), "segments": pl.List(pl.String),
                                         "source": pl.String})
    assert profiles.drop("id").to_dicts() == [
        {"email": ["a@x.com"], "tags": ["x", "y"], "points": ["10"], "segments": ["gold"], "source": "crm"},
        {"email": ["b@x.com"], "tags": ["z"], "points": ["5"], "segments": [], "source": "crm"}]
    visits = read(f"out_{result.run}_visit.parquet.gpg")
    assert visits.select("id", "time", "page").rows() == [("V1", "2026-11-01T00:00:00Z", "/home"),
                                                         ("V2", "2026-11-02T00:00:00Z", "/cart")]
