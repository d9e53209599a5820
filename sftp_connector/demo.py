"""A self-contained tour: an SFTP server on 127.0.0.1 inside this process, a partner who drops
encrypted household, customer and order files on it, the connector importing them (groups, every
merge rule, linked files, timeline events, the product store), a summary.

The partner side (key generation, encryption) uses gpg directly, as a partner would; the
connector side goes through the same configuration, runner and store as production.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import tempfile
import textwrap
from pathlib import Path

import gnupg
import paramiko
from rich.console import Console
from rich.table import Table

from sftp_connector import loopback, summary
from sftp_connector.config import load
from sftp_connector.goals import runner
from sftp_connector.sftp import login
from sftp_connector.store import db, queries

logger = logging.getLogger(__name__)

PASSPHRASE = "demo passphrase, not a secret"

CUSTOMERS_1 = [
    ["customer_id", "email", "first_name", "phone", "fax", "interests", "points", "newsletter", "household"],
    ["C1", "ada@example.com", "Ada", "+31 20 555 0101", "020 555 0199", "books|chess", "120", "yes", "H1"],
    ["C2", "bob@example.com", "Bob", "", "", "cycling", "40", "no", "H1"],
    ["C3", "cleo@example.com", "Cleo", "+32 2 555 0303", "", "travel|books", "75", "yes", "H2"],
    ["C4", "dan@example.com", "Dan", "", "030 555 0404", "", "not-a-number", "yes", ""],
    ["C5", "eve@example.com", "Eve", "+31 10 555 0505", "", "chess", "10", "no", "H2"],
]
CUSTOMERS_2 = [
    CUSTOMERS_1[0],
    ["C1", "ada@example.com", "Ada", "+31 6 9999 0000", "", "books|running", "30", "yes", ""],
    ["C2", "bob@example.com", "Robert", "+31 6 5555 1234", "", "", "5", "yes", "H2"],
    ["C6", "fay@example.com", "Fay", "", "", "travel", "60", "yes", ""],
]
HOUSEHOLDS = [["household_id", "street", "city"], ["H1", "Keizersgracht 1", "Amsterdam"],
              ["H2", "Grote Markt 2", "Brussel"]]
ORDERS = [["order_id", "email", "amount", "ordered_at"], ["O1", "ada@example.com", "25.50", "2026-11-01T09:30:00Z"],
          ["O2", "ada@example.com", "12", "2026-11-03"], ["O3", "cleo@example.com", "40", "2026-11-02T18:00:00+01:00"]]
ORDER_LINES = [["order_id", "sku", "qty"], ["O1", "BOOK-1", "1"], ["O1", "CHESS-2", "1"], ["O2", "BOOK-1", "2"],
               ["O3", "MAP-7", "1"]]

HOUSEHOLDS_GOAL = """\
kind: import-groups
name: households
group_type: household
files: [{name: households, directory: in/households, pattern: "households_*.csv.gpg"}]
stable_after_s: 0
identifier: {field: household_id}
mappings:
  - {field: street, property: street}
  - {field: city, property: city}
"""

ORDERS_GOAL = """\
kind: import-profiles
name: orders
files:
  - {name: orders, directory: in/orders, pattern: "orders_*.csv.gpg"}
  - {name: lines, directory: in/orders, pattern: "lines_*.csv.gpg", link: {parent: order_id, child: order_id}}
stable_after_s: 0
allow_new_profiles: false
identifiers: [{field: email, property: email}]
mappings: [{field: amount, property: total_spent, rule: sum}]
events:
  - type: order
    id: order_id
    time: ordered_at
    properties: {total: amount}
    nested: [{name: products, file: lines, properties: {sku: sku, quantity: qty}}]
    product_store: true
"""

GOAL = """\
kind: import-profiles
name: customers
files:
  - name: customers
    directory: in/customers
    pattern: "customers_*.csv.gpg"
stable_after_s: 0
identifiers:
  - {field: email, property: email}
  - {field: customer_id, property: crm_id}
mappings:
  - {field: first_name, property: first_name, rule: set}
  - {field: phone, property: phone, rule: set_if_empty}
  - {field: fax, property: fax, rule: set_or_clear}
  - {field: interests, property: interests, rule: add}
  - {field: points, property: loyalty_points, rule: sum}
  - {field: newsletter, property: newsletter, rule: set}
groups: [{type: household, field: household}]
"""


NEWSLETTER_GOAL = """\
kind: export-profiles
name: newsletter
segment: newsletter
directory: out/newsletter
filename: "newsletter_{run}.csv"
columns:
  - {column: id, value: profile_id}
  - {column: email, property: email}
  - {column: first_name, property: first_name}
  - {column: interests, property: interests}
  - {column: segments, value: segments}
"""


def main(keep: Path | None, console: Console) -> int:
    """Given an optional folder to keep the demo in, run the tour and return its exit code."""
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="sftpc-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        return _tour(base, console)
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)


def _tour(base: Path, console: Console) -> int:
    server_root = base / "server"
    for folder in ("customers", "households", "orders"):
        (server_root / "in" / folder).mkdir(parents=True, exist_ok=True)
    login.new_client_key(base / "keys" / "id_ed25519", "sftp-connector demo")
    client_key = paramiko.Ed25519Key.from_private_key_file(str(base / "keys" / "id_ed25519"))
    logging.getLogger("sftp_connector.loopback").setLevel(logging.WARNING)
    partner = _partner_keys(base)
    with loopback.LoopbackServer(server_root, username="partner", authorized_key=client_key) as server:
        _write_config(base, server)
        console.print(f"[bold]1.[/] SFTP server on {server.host}:{server.port} ({server.fingerprint()}); "
                      "the partner drops households_001, customers_001, and orders_001 with its order lines")
        _drop(partner, server_root, "households/households_001.csv", HOUSEHOLDS)
        _drop(partner, server_root, "customers/customers_001.csv", CUSTOMERS_1)
        _drop(partner, server_root, "orders/orders_001.csv", ORDERS)
        _drop(partner, server_root, "orders/lines_001.csv", ORDER_LINES)
        code = _run(base, console)
        console.print("[bold]2.[/] the partner drops customers_002.csv.gpg with changes and a new customer")
        _drop(partner, server_root, "customers/customers_002.csv", CUSTOMERS_2)
        code = max(code, _run(base, console))
        console.print("[bold]3.[/] nothing new: the next run skips every file without downloading it")
        code = max(code, _run(base, console))
        _show_profiles(base, console)
        _show_events(base, console)
        _show_rejects(base, console)
        console.print("[bold]4.[/] the connector exports the newsletter segment (newsletter: yes, with an email), "
                      "encrypted to the partner's key; the partner decrypts it:")
        (base / "goals" / "newsletter.yaml").write_text(NEWSLETTER_GOAL)
        code = max(code, _run(base, console, "newsletter"))
        _show_export(partner, server_root / "out" / "newsletter", console)
    shutil.rmtree(partner.gnupghome, ignore_errors=True)
    return code


def _partner_keys(base: Path) -> gnupg.GPG:
    """Make the connector's PGP key in a partner's keyring and hand the connector its private key."""
    home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
    partner = gnupg.GPG(gnupghome=str(home))
    spec = partner.gen_key_input(key_type="EDDSA", key_curve="ed25519", subkey_type="ECDH",
                                 subkey_curve="cv25519", name_real="sftp-connector demo",
                                 name_email="connector@demo.invalid", passphrase=PASSPHRASE, expire_date=0)
    key = partner.gen_key(spec)
    exported = partner.export_keys(key.fingerprint, secret=True, passphrase=PASSPHRASE, armor=True)
    private = base / "keys" / "connector.private.asc"
    private.write_text(exported)
    private.chmod(0o600)
    passphrase = base / "keys" / "pgp.passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    partner.demo_fingerprint = key.fingerprint
    # The partner's own key, which the connector encrypts exports to.
    own = partner.gen_key(partner.gen_key_input(key_type="EDDSA", key_curve="ed25519", subkey_type="ECDH",
                                                subkey_curve="cv25519", name_real="demo partner",
                                                name_email="partner@demo.invalid", no_protection=True,
                                                expire_date=0))
    (base / "keys" / "partner.public.asc").write_text(partner.export_keys(own.fingerprint, armor=True))
    return partner


def _write_config(base: Path, server: loopback.LoopbackServer) -> None:
    (base / "keys" / "known_hosts").write_text(server.known_hosts_line() + "\n")
    (base / "goals").mkdir(exist_ok=True)
    (base / "goals" / "customers.yaml").write_text(GOAL)
    (base / "goals" / "households.yaml").write_text(HOUSEHOLDS_GOAL)
    (base / "goals" / "orders.yaml").write_text(ORDERS_GOAL)
    (base / "connector.yaml").write_text(textwrap.dedent(f"""\
        name: demo
        sftp:
          host: {server.host}
          port: {server.port}
          username: partner
          auth: {{method: key, private_key: keys/id_ed25519}}
          known_hosts: keys/known_hosts
          timeout_s: 10
        pgp:
          gnupg_home: keys/gnupg
          decrypt:
            private_key: keys/connector.private.asc
            passphrase_file: keys/pgp.passphrase
          encrypt:
            recipients: [keys/partner.public.asc]
        store:
          url: sqlite:///state/connector.db
        segments:
          newsletter:
            all:
              - {{property: newsletter, equals: "yes"}}
              - {{property: email, exists: true}}
        """))


def _drop(partner: gnupg.GPG, root: Path, name: str, rows: list[list[str]]) -> None:
    """Encrypt a CSV to the connector's key as the partner would, and put it on the server."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    target = root / "in" / (name + ".gpg")
    result = partner.encrypt(text.getvalue(), partner.demo_fingerprint,
                             armor=False, always_trust=True, output=str(target))
    if not result.ok:
        raise RuntimeError(f"gpg could not encrypt the demo file: {result.status}")


def _run(base: Path, console: Console, *names: str) -> int:
    config = load.load(base / "connector.yaml")
    store = db.open_store(config.connector.store.url)
    try:
        result = runner.run(config, store, names=list(names))
    finally:
        store.dispose()
    summary.print_summary(result, console)
    return result.exit_code


def _show_profiles(base: Path, console: Console) -> None:
    config = load.load(base / "connector.yaml")
    store = db.open_store(config.connector.store.url)
    table = Table(title="profiles")
    columns = ["crm_id", "email", "first_name", "phone", "fax", "interests", "loyalty_points", "newsletter",
               "total_spent"]
    for column in ["id", *columns, "household"]:
        table.add_column(column)
    with store.connection() as conn:
        for profile in queries.iter_profiles(conn):
            props = profile["properties"]
            table.add_row(str(profile["id"]), *("|".join(map(str, props.get(c, []))) for c in columns),
                          "|".join(profile["groups"].get("household", [])))
    store.dispose()
    console.print(table)


def _show_events(base: Path, console: Console) -> None:
    config = load.load(base / "connector.yaml")
    store = db.open_store(config.connector.store.url)
    events, products = Table(title="timeline events"), Table(title="product store")
    for column in ("profile", "type", "id", "time", "total", "products"):
        events.add_column(column)
    for column in ("sku", "times bought", "last bought"):
        products.add_column(column)
    with store.connection() as conn:
        for event in queries.iter_events(conn):
            items = ", ".join(f"{i['sku']} x {i['quantity']}" for i in event["nested"].get("products", []))
            events.add_row(str(event["profile_id"]), event["type"], event["id"], event["time"] or "",
                           event["properties"].get("total") or "", items)
        for product in queries.iter_products(conn):
            products.add_row(product["sku"], str(product["times_bought"]), product["last_bought"] or "")
    store.dispose()
    console.print(events)
    console.print(products)


def _show_rejects(base: Path, console: Console) -> None:
    """Print the rejected rows as the rejects files hold them (the folder goes with the demo's temp dir)."""
    table = Table(title="rejected cells (state/rejects/<run>/<file>.csv): the rest of each row was applied")
    for column in ("file", "row", "column", "value", "why"):
        table.add_column(column)
    for path in sorted((base / "state" / "rejects").glob("*/*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                column = row["_column"]
                table.add_row(path.name, row["_row"], column, row.get(column, ""), row["_reason"])
    console.print(table)


def _show_export(partner: gnupg.GPG, folder: Path, console: Console) -> None:
    """Decrypt the exported file as the partner would and print it."""
    for path in sorted(folder.iterdir()):
        plain = partner.decrypt_file(str(path), always_trust=True)
        if not plain.ok:
            raise RuntimeError(f"the partner could not decrypt the demo export: {plain.status}")
        console.print(f"{path.name}:", markup=False, highlight=False)
        console.print(bytes(plain.data).decode().rstrip(), markup=False, highlight=False)
