"""Sync modes and governance over the real sshd and gpg, on both stores: overwrite, erasure requests,
data-usage labels, Parquet exports."""

from __future__ import annotations

import io
import json
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
    "files": [{"name": "crm", "directory": "in/crm", "pattern": "crm_*.csv*"}], "stable_after_s": 0,
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
    deployment.put_encrypted("in/crm/crm_1.csv.gpg", "email,tier,points,tags,household,visit,at,page\n"
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
                                         "points": pl.List(pl.Float64), "segments": pl.List(pl.String),
                                         "source": pl.String})
    assert profiles.drop("id").to_dicts() == [
        {"email": ["a@x.com"], "tags": ["x", "y"], "points": [10.0], "segments": ["gold"], "source": "crm"},
        {"email": ["b@x.com"], "tags": ["z"], "points": [5.0], "segments": [], "source": "crm"}]
    visits = read(f"out_{result.run}_visit.parquet.gpg")
    assert visits.select("id", "time", "page").rows() == [("V1", "2026-11-01T00:00:00Z", "/home"),
                                                         ("V2", "2026-11-02T00:00:00Z", "/cart")]


def test_overwrite_clears_exactly_the_absent_profiles_goal_owned_values(deployment: Deployment) -> None:
    deployment.write_goal("crm", {**CRM, "write_mode": "overwrite", "max_clear_ratio": 0.5})
    deployment.write_goal("shop", SHOP)
    deployment.put_encrypted("in/crm/crm_1.csv.gpg", "email,tier,points,tags,household\na@x.com,gold,10,x,H1\n"
                             "b@x.com,silver,5,y,H2\nc@x.com,bronze,1,z,H3\n", mtime=OLD)
    deployment.put("in/shop/shop_1.csv", "email,city,points\nb@x.com,Gent,100\n", mtime=OLD)
    assert deployment.run().status == "success"
    # Tonight's full list no longer holds b: crm's values for b go, the shop's stay.
    deployment.put_encrypted("in/crm/crm_2.csv.gpg", "email,tier,points,tags,household\na@x.com,gold,10,x,H1\n"
                   "c@x.com,bronze,1,z,H3\n", mtime=OLD)
    result = deployment.run()
    assert result.status == "success", result
    people = by_email(deployment)
    assert people["b@x.com"]["properties"] == {"email": ["b@x.com"], "city": ["Gent"], "points": [100]}
    assert people["b@x.com"]["groups"] == {}
    assert people["a@x.com"]["properties"] == {"email": ["a@x.com"], "tier": ["gold"], "points": [20], "tags": ["x"]}
    assert people["c@x.com"]["groups"] == {"household": ["H3"]}
    crm = next(g for g in result.goals if g.goal == "crm")
    assert crm.files[-1].counts.cleared == 1


def test_overwrite_refuses_to_clear_too_much_unless_forced(deployment: Deployment) -> None:
    deployment.write_goal("crm", {**CRM, "write_mode": "overwrite", "max_clear_ratio": 0.5})
    deployment.put_encrypted("in/crm/crm_1.csv.gpg", "email,tier,points,tags,household\n" + "".join(
        f"p{i}@x.com,gold,1,t,H{i}\n" for i in range(10)), mtime=OLD)
    assert deployment.run().status == "success"
    before = deployment.profiles()
    deployment.put_encrypted("in/crm/crm_2.csv.gpg", "email,tier,points,tags,household\np0@x.com,gold,1,t,H0\n",
                             mtime=OLD)
    refused = deployment.run()
    assert refused.status == "failed"
    error = refused.goals[0].files[-1].error or ""
    assert "crm_2.csv" in error and "would clear 9 of the goal's 10 profiles" in error and "--force" in error
    assert deployment.profiles() == before
    assert deployment.run(force=True).status == "success"
    people = by_email(deployment)
    assert people["p0@x.com"]["properties"]["tier"] == ["gold"]
    assert people["p5@x.com"]["properties"] == {"email": ["p5@x.com"], "points": [0]}


def test_the_newest_profiles_erased_id_is_never_given_again(deployment: Deployment) -> None:
    deployment.write_goal("crm", {**CRM, "delete_when": {"field": "deleted", "equals": "true"}})
    header = "email,tier,points,tags,household,deleted\n"
    deployment.put_encrypted("in/crm/crm_1.csv.gpg", header + "a@x.com,gold,1,,,\nb@x.com,gold,1,,,\n", mtime=OLD)
    assert deployment.run().status == "success"
    newest = by_email(deployment)["b@x.com"]["id"]
    deployment.put_encrypted("in/crm/crm_2.csv.gpg", header + "b@x.com,,,,,true\n", mtime=OLD)
    assert deployment.run().status == "success"
    deployment.put_encrypted("in/crm/crm_3.csv.gpg", header + "c@x.com,gold,1,,,\nd@x.com,gold,1,,,\n", mtime=OLD)
    assert deployment.run().status == "success"
    ids = {email: p["id"] for email, p in by_email(deployment).items()}
    assert list(ids) == ["a@x.com", "c@x.com", "d@x.com"]
    assert newest < ids["c@x.com"] < ids["d@x.com"]


def test_erasure_then_a_remention_makes_a_new_profile(deployment: Deployment) -> None:
    deployment.write_goal("crm", {**CRM, "delete_when": {"field": "deleted", "equals": "true"},
                                  "events": [{"type": "visit", "id": "visit", "properties": {"tier": "tier"}}]})
    deployment.put_encrypted("in/crm/crm_1.csv.gpg", "email,tier,points,tags,household,deleted,visit\n"
                   "a@x.com,gold,10,x,H1,,V1\nb@x.com,silver,5,y,H2,,V2\n", mtime=OLD)
    assert deployment.run().status == "success"
    old = by_email(deployment)["a@x.com"]["id"]
    deployment.put_encrypted("in/crm/crm_2.csv.gpg", "email,tier,points,tags,household,deleted,visit\n"
                   "a@x.com,,,,,true,\n", mtime=OLD)
    result = deployment.run()
    assert result.status == "success", result
    assert result.goals[0].files[-1].counts.erased == 1
    assert list(by_email(deployment)) == ["b@x.com"]
    assert [e["id"] for e in deployment.read("events")] == ["V2"]
    history = [json.loads(line) for line in deployment.cli("history", "--json").stdout.splitlines()]
    assert [f["erased"] for f in history[0]["goals"][0]["files"]] == [0, 1]  # crm_1 unchanged, crm_2 erased one
    # Re-importing the first file (forced) does not bring the old profile back: it makes a new one.
    deployment.remote_path("in/crm/crm_2.csv.gpg").unlink()
    assert deployment.run(force=True).status == "success"
    again = by_email(deployment)["a@x.com"]
    assert again["id"] != old and again["properties"]["points"] == [10]
    # Without allow_new_profiles, a mention after the erasure makes nothing.
    deployment.write_goal("crm", {**CRM, "allow_new_profiles": False,
                                  "delete_when": {"field": "deleted", "equals": "true"}})
    header = "email,tier,points,tags,household,deleted\n"
    deployment.put_encrypted("in/crm/crm_3.csv.gpg", header + "a@x.com,,,,,true\n", mtime=OLD)
    deployment.put_encrypted("in/crm/crm_4.csv.gpg", header + "a@x.com,gold,1,,,\n", mtime=OLD)
    assert deployment.run().status == "success"
    assert list(by_email(deployment)) == ["b@x.com"]
