"""Linked files over the real sshd and gpg: a three-level chain, wildcard pairing, child mappings,
timeline events with nested products, the product store, and each bad case leaving the store unchanged."""

from __future__ import annotations

import time
from typing import Any

import yaml

from tests.fixtures.connector import Deployment

OLD = time.time() - 3600

GOAL: dict[str, Any] = {
    "kind": "import-profiles",
    "name": "shop",
    "files": [
        {"name": "customers", "directory": "in/customers", "pattern": "customers_*.csv.gpg"},
        {"name": "orders", "directory": "in/orders", "pattern": "orders_*.csv.gpg",
         "link": {"parent": "customer_id", "child": "customer_id"}},
        {"name": "order_lines", "parent": "orders", "directory": "in/orders", "pattern": "order_lines_*.csv.gpg",
         "link": {"parent": "order_id", "child": "order_id"}},
    ],
    "stable_after_s": 0,
    "identifiers": [{"field": "customer_id", "property": "crm_id"}],
    "mappings": [
        {"field": "name", "property": "name", "rule": "set"},
        {"field": "orders.amount", "property": "total_spent", "rule": "sum"},
        {"field": "orders.channel", "property": "channels", "rule": "add"},
    ],
    "events": [{
        "type": "order", "file": "orders", "id": "order_id", "time": "order_date",
        "properties": {"total": "amount", "channel": "channel"},
        "nested": [{"name": "products", "file": "order_lines", "properties": {"sku": "sku", "quantity": "qty"}}],
        "product_store": True,
    }],
}

CUSTOMERS_1 = "customer_id,name\nC1,Ada\nC2,Bob\nC3,Cy\n"
ORDERS_1 = ("order_id,customer_id,amount,channel,order_date\n"
            "O1,C1,10.5,web,2026-11-01T10:00:00Z\nO2,C1,4.5,shop,2026-11-02\nO3,C2,7,web,2026-11-03 09:30:00\n")
LINES_1 = "order_id,sku,qty\nO1,SKU-A,1\nO1,SKU-B,2\nO2,SKU-A,1\nO3,SKU-C,5\n"
CUSTOMERS_2 = "customer_id,name\nC4,Dee\n"
ORDERS_2 = "order_id,customer_id,amount,channel,order_date\nO4,C4,3,app,2026-11-04T08:00:00+01:00\n"
LINES_2 = "order_id,sku,qty\nO4,SKU-A,3\n"


def drop(deployment: Deployment, number: int, customers: str, orders: str, lines: str) -> None:
    deployment.put_encrypted(f"in/customers/customers_{number}.csv.gpg", customers, mtime=OLD)
    deployment.put_encrypted(f"in/orders/orders_{number}.csv.gpg", orders, mtime=OLD)
    deployment.put_encrypted(f"in/orders/order_lines_{number}.csv.gpg", lines, mtime=OLD)


def by_crm(deployment: Deployment) -> dict[str, dict[str, Any]]:
    return {p["crm_id"][0]: p for p in deployment.properties()}


def statuses(result: Any) -> list[tuple[str, str]]:
    return [(f.path.rsplit("/", 1)[1], f.status) for g in result.goals for f in g.files]


def test_three_level_chain_with_two_wildcard_sets(deployment: Deployment) -> None:
    deployment.write_goal("shop", GOAL)
    drop(deployment, 1, CUSTOMERS_1, ORDERS_1, LINES_1)
    drop(deployment, 2, CUSTOMERS_2, ORDERS_2, LINES_2)
    result = deployment.run()
    assert result.status == "success", result
    assert sorted(statuses(result)) == sorted((f"{n}_{i}.csv.gpg", "imported")
                                              for n in ("customers", "orders", "order_lines") for i in (1, 2))
    assert by_crm(deployment) == {
        "C1": {"crm_id": ["C1"], "name": ["Ada"], "total_spent": [15], "channels": ["web", "shop"]},
        "C2": {"crm_id": ["C2"], "name": ["Bob"], "total_spent": [7], "channels": ["web"]},
        "C3": {"crm_id": ["C3"], "name": ["Cy"]},
        "C4": {"crm_id": ["C4"], "name": ["Dee"], "total_spent": [3], "channels": ["app"]},
    }
    ids = {p["properties"]["crm_id"][0]: p["id"] for p in deployment.profiles()}
    events = {e["id"]: e for e in deployment.read("events")}
    assert events["O1"] == {
        "profile_id": ids["C1"], "type": "order", "id": "O1", "time": "2026-11-01T10:00:00Z",
        "properties": {"total": "10.5", "channel": "web"},
        "nested": {"products": [{"sku": "SKU-A", "quantity": "1"}, {"sku": "SKU-B", "quantity": "2"}]},
    }
    assert events["O2"]["time"] == "2026-11-02T00:00:00Z"
    assert events["O3"]["profile_id"] == ids["C2"]
    assert events["O4"]["time"] == "2026-11-04T07:00:00Z"
    assert sorted(events) == ["O1", "O2", "O3", "O4"]
    assert {p["sku"]: (p["times_bought"], p["last_bought"]) for p in deployment.read("products")} == {
        "SKU-A": (3, "2026-11-04T07:00:00Z"), "SKU-B": (1, "2026-11-01T10:00:00Z"),
        "SKU-C": (1, "2026-11-03T09:30:00Z")}
    counts = {f.path.rsplit("/", 1)[1]: f.counts for g in result.goals for f in g.files}
    assert counts["orders_1.csv.gpg"].rows_read == 3 and counts["orders_1.csv.gpg"].rows_applied == 3
    assert counts["order_lines_1.csv.gpg"].rows_read == 4


def test_reimport_updates_events_in_place_and_sums_only_the_difference(deployment: Deployment) -> None:
    deployment.write_goal("shop", GOAL)
    drop(deployment, 1, CUSTOMERS_1, ORDERS_1, LINES_1)
    deployment.run()
    # O1 is now 20.5 and lost SKU-B; O5 is new. Same paths: exactly-once rows.
    orders = ORDERS_1.replace("O1,C1,10.5", "O1,C1,20.5") + "O5,C2,1,web,2026-11-05\n"
    lines = "order_id,sku,qty\nO1,SKU-A,1\nO2,SKU-A,1\nO3,SKU-C,5\nO5,SKU-C,1\n"
    deployment.put_encrypted("in/orders/orders_1.csv.gpg", orders, mtime=OLD + 10)
    deployment.put_encrypted("in/orders/order_lines_1.csv.gpg", lines, mtime=OLD + 10)
    result = deployment.run()
    assert result.status == "success", result
    assert by_crm(deployment)["C1"]["total_spent"] == [25]
    assert by_crm(deployment)["C2"]["total_spent"] == [8]
    events = {e["id"]: e for e in deployment.read("events")}
    assert sorted(events) == ["O1", "O2", "O3", "O5"]
    assert events["O1"]["properties"]["total"] == "20.5"
    assert events["O1"]["nested"] == {"products": [{"sku": "SKU-A", "quantity": "1"}]}
    products = {p["sku"]: p["times_bought"] for p in deployment.read("products")}
    assert products == {"SKU-A": 2, "SKU-B": 0, "SKU-C": 2}
    again = deployment.run(force=True)
    assert again.status == "success"
    assert by_crm(deployment)["C1"]["total_spent"] == [25]
    assert {p["sku"]: p["times_bought"] for p in deployment.read("products")} == products
    assert len(deployment.read("events")) == 4


def test_missing_linked_file_names_both_files_and_writes_nothing(deployment: Deployment) -> None:
    deployment.write_goal("shop", GOAL)
    deployment.put_encrypted("in/customers/customers_7.csv.gpg", CUSTOMERS_1, mtime=OLD)
    deployment.put_encrypted("in/orders/orders_7.csv.gpg", ORDERS_1, mtime=OLD)
    deployment.put_encrypted("in/orders/order_lines_8.csv.gpg", LINES_1, mtime=OLD)
    result = deployment.run()
    assert result.status == "failed"
    error = result.goals[0].error or ""
    assert "goal shop" in error and "customers_7.csv.gpg" in error
    assert "linked file order_lines is missing" in error and "'7'" in error
    assert deployment.profiles() == [] and deployment.read("events") == []
    deployment.put_encrypted("in/orders/order_lines_7.csv.gpg", LINES_1, mtime=OLD)
    assert deployment.run().status == "success"
    assert len(deployment.profiles()) == 3


def test_missing_link_key_names_both_files_and_writes_nothing(deployment: Deployment) -> None:
    deployment.write_goal("shop", GOAL)
    drop(deployment, 1, CUSTOMERS_1, ORDERS_1.replace("customer_id", "client_id", 1), LINES_1)
    result = deployment.run()
    assert result.status == "failed"
    error = result.goals[0].error or ""
    assert "link key customer_id is not a column of orders_1.csv.gpg (linked to customers_1.csv.gpg)" in error
    assert deployment.profiles() == [] and deployment.read("events") == [] and deployment.read("products") == []


def test_orphan_child_rows_are_counted_and_reported(deployment: Deployment) -> None:
    deployment.write_goal("shop", GOAL)
    orders = ORDERS_1 + "O9,C99,5,web,2026-11-09\nO10,,5,web,2026-11-09\n"
    drop(deployment, 1, CUSTOMERS_1, orders, LINES_1 + "O77,SKU-Z,1\n")
    result = deployment.run()
    assert result.status == "success", result
    counts = {f.path.rsplit("/", 1)[1]: f.counts for g in result.goals for f in g.files}
    assert counts["orders_1.csv.gpg"].orphans == 2
    assert counts["order_lines_1.csv.gpg"].orphans == 1
    assert by_crm(deployment)["C1"]["total_spent"] == [15]
    assert "O9" not in {e["id"] for e in deployment.read("events")}
    rejects = (deployment.dir / "state" / "rejects" / result.run)
    orders_rejects = next(p for p in rejects.glob("*.csv") if "orders_1" in p.name and "lines" not in p.name)
    text = orders_rejects.read_text()
    assert "no row of customers_1.csv.gpg has customer_id = 'C99'" in text
    assert "`customer_id` is empty" in text


def test_a_changed_linked_file_alone_reimports_the_set(deployment: Deployment) -> None:
    deployment.write_goal("shop", GOAL)
    drop(deployment, 1, CUSTOMERS_1, ORDERS_1, LINES_1)
    deployment.run()
    assert set(s for _, s in statuses(deployment.run())) == {"skipped_unchanged"}
    deployment.put_encrypted("in/orders/orders_1.csv.gpg", ORDERS_1 + "O6,C3,2,web,2026-11-06\n", mtime=OLD + 5)
    result = deployment.run()
    assert result.status == "success"
    assert by_crm(deployment)["C3"]["total_spent"] == [2]
    assert by_crm(deployment)["C1"]["total_spent"] == [15]


def test_groups_then_profiles_linked_to_them(deployment: Deployment) -> None:
    deployment.write_goal("households", {
        "kind": "import-groups", "name": "households", "group_type": "household",
        "files": [{"name": "households", "directory": "in/households", "pattern": "households_*.csv"}],
        "stable_after_s": 0, "identifier": {"field": "household_id"},
        "mappings": [{"field": "street", "property": "street", "rule": "set"},
                     {"field": "members", "property": "members", "rule": "sum"}],
    })
    deployment.write_goal("people", {
        "kind": "import-profiles", "name": "people",
        "files": [{"name": "people", "directory": "in/people", "pattern": "people_*.csv"}],
        "stable_after_s": 0, "identifiers": [{"field": "email", "property": "email"}],
        "groups": [{"type": "household", "field": "household"}],
        "mappings": [{"field": "name", "property": "name"}],
    })
    deployment.put("in/households/households_1.csv", "household_id,street,members\nH1,Main St 1,2\nH2,Side 2,1\n",
                   mtime=OLD)
    deployment.put("in/people/people_1.csv", "email,name,household\na@x.com,Ada,H1\nb@x.com,Bob,H1\nc@x.com,Cy,\n",
                   mtime=OLD)
    result = deployment.run()
    assert result.status == "success", result
    assert [g.goal for g in result.goals] == ["households", "people"]  # groups first, whatever the names
    groups = deployment.read("groups")
    assert [(g["type"], g["id"], g["properties"]) for g in groups] == [
        ("household", "H1", {"street": ["Main St 1"], "members": [2]}),
        ("household", "H2", {"street": ["Side 2"], "members": [1]})]
    assert [p["groups"] for p in deployment.profiles()] == [{"household": ["H1"]}, {"household": ["H1"]}, {}]
    # Bob moves to H2 (set replaces); a new household file row sums into H1.
    deployment.put("in/people/people_2.csv", "email,name,household\nb@x.com,Bob,H2\n", mtime=OLD)
    deployment.put("in/households/households_2.csv", "household_id,street,members\nH1,,1\n", mtime=OLD)
    assert deployment.run().status == "success"
    assert [p["groups"] for p in deployment.profiles()] == [{"household": ["H1"]}, {"household": ["H2"]}, {}]
    assert deployment.read("groups")[0]["properties"] == {"street": ["Main St 1"], "members": [3]}
    dumped = deployment.cli("groups", "dump")
    assert dumped.returncode == 0, dumped.stderr
    first = yaml.safe_load(dumped.stdout.splitlines()[0])
    assert first["type"] == "household" and first["id"] == "H1" and first["properties"]["members"] == [3]
    assert first["created_at"].endswith("Z")
    profile = yaml.safe_load(deployment.cli("profiles", "get", "--by", "email=b@x.com").stdout)
    assert profile["groups"] == {"household": ["H2"]}


def test_events_from_a_lone_file_and_the_dumps(deployment: Deployment) -> None:
    deployment.write_goal("orders", {
        "kind": "import-profiles", "name": "orders",
        "files": [{"name": "orders", "directory": "in/orders", "pattern": "flat_*.csv"}],
        "stable_after_s": 0, "identifiers": [{"field": "email", "property": "email"}],
        "mappings": [{"field": "amount", "property": "spent", "rule": "sum"}],
        "events": [{"type": "purchase", "id": "order_id", "time": "at", "properties": {"total": "amount"},
                    "nested": [], "product_store": False}],
    })
    deployment.put("in/orders/flat_1.csv", "email,order_id,amount,at\na@x.com,P1,5,2026-11-01T12:00:00Z\n"
                   "a@x.com,P2,6,yesterday\nb@x.com,,1,2026-11-02\n", mtime=OLD)
    result = deployment.run()
    assert result.status == "success", result
    counts = result.goals[0].files[0].counts
    assert counts.rows_applied == 3 and counts.cells_rejected == 2
    assert [(e["id"], e["time"], e["properties"]) for e in deployment.read("events")] == [
        ("P1", "2026-11-01T12:00:00Z", {"total": "5"})]
    dumped = deployment.cli("events", "dump")
    assert dumped.returncode == 0, dumped.stderr
    event = yaml.safe_load(dumped.stdout)
    assert event["type"] == "purchase" and event["nested"] == {} and isinstance(event["profile_id"], str)
    products = deployment.cli("products", "dump")
    assert products.returncode == 0 and products.stdout == ""


def test_dry_run_of_a_linked_set_writes_nothing(deployment: Deployment) -> None:
    deployment.write_goal("shop", {**GOAL, "after_import": "delete"})
    drop(deployment, 1, CUSTOMERS_1, ORDERS_1, LINES_1)
    result = deployment.run(dry_run=True)
    assert result.status == "success", result
    assert {s for _, s in statuses(result)} == {"dry_run"}
    assert deployment.profiles() == [] and deployment.read("events") == [] and deployment.read("products") == []
    assert deployment.remote_path("in/orders/orders_1.csv.gpg").exists()
    assert {s for _, s in statuses(deployment.run())} == {"imported"}
    assert not deployment.remote_path("in/orders/orders_1.csv.gpg").exists()
