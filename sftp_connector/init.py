"""`sftp-connector init DIR`: write a complete deployment with fresh keys, ready to validate.

It writes a commented connector.yaml (every section), one goal of each kind, the connector's SSH
key and OpenPGP key (private files 0600, the OpenPGP passphrase as a `passphrase_file` secret),
and, given a host, the server's host key in known_hosts, only once the operator confirmed its
fingerprint (or it matches `--accept-host-key`). Nothing that exists is overwritten.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sftp_connector.errors import ConfigError, GoalError
from sftp_connector.pgp import keys
from sftp_connector.private import private_dir, private_file
from sftp_connector.sftp import login


@dataclass(frozen=True, slots=True)
class Server:
    """The SFTP server the deployment talks to (placeholders without --host)."""

    host: str = "sftp.example.com"
    port: int = 22
    user: str = "acme"


@dataclass(frozen=True, slots=True)
class Created:
    """What init made: the public halves to hand to the partner, and whether the host key was written."""

    ssh_public_key: str
    pgp_public_key: Path
    pgp_fingerprint: str
    host_key: str | None
    """The server's key type and SHA256 fingerprint written to known_hosts, or None."""


def create(
    base: Path, server: Server | None, *, accept_host_key: str | None, confirm: Callable[[str], bool],
    pgp_algorithm: str = "ed25519",
) -> Created:
    """Given an empty (or missing) folder, the server (None: placeholders), an expected host key fingerprint
    and a way to ask the operator, write the deployment; return what was made. Raise ConfigError if the
    folder already holds a deployment or the host key is refused, GoalError if the server cannot be reached."""
    if (base / "connector.yaml").exists():
        raise ConfigError(f"{base / 'connector.yaml'} exists: init never overwrites a deployment")
    host_key = _host_key(server, accept_host_key, confirm) if server is not None else None
    private_dir(base / "keys")
    (base / "goals").mkdir(parents=True, exist_ok=True)
    ssh_public = login.new_client_key(base / "keys" / "id_ed25519", f"sftp-connector@{base.resolve().name}")
    passphrase = base / "keys" / "pgp_passphrase"
    with private_file(passphrase).open("w", encoding="ascii") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    fingerprint = keys.generate_key(f"sftp-connector {base.resolve().name} <sftp-connector@localhost>",
                                    passphrase.read_text().strip(), base / "keys" / "connector.private.asc",
                                    base / "keys" / "connector.public.asc", pgp_algorithm)
    if host_key is not None:
        (base / "keys" / "known_hosts").write_text(host_key[0] + "\n")
    shown = server or Server()
    (base / "connector.yaml").write_text(CONNECTOR.format(name=base.resolve().name, host=shown.host,
                                                          port=shown.port, user=shown.user))
    for name, text in GOALS.items():
        (base / "goals" / f"{name}.yaml").write_text(text)
    return Created(ssh_public, base / "keys" / "connector.public.asc", fingerprint,
                   f"{host_key[1]} {host_key[2]}" if host_key else None)


def _host_key(server: Server, expected: str | None, confirm: Callable[[str], bool]) -> tuple[str, str, str]:
    """Fetch the server's host key; return it once it matches `expected` or the operator confirms it."""
    try:
        line, kind, fingerprint = login.server_host_key(server.host, server.port)
    except GoalError as exc:
        raise GoalError(f"init: {exc}") from exc
    if expected is not None:
        if expected != fingerprint:
            raise ConfigError(f"the host key of {server.host}:{server.port} is {kind} {fingerprint}, not "
                              f"{expected} (--accept-host-key): nothing written; check with the server's owner")
        return line, kind, fingerprint
    if not confirm(f"{server.host}:{server.port} offers the host key {kind} {fingerprint}. Is this the "
                   "server's key (checked with its owner out of band)?"):
        raise ConfigError("host key not confirmed: nothing written (check the fingerprint with the server's "
                          "owner, then run init again with --accept-host-key SHA256:…)")
    return line, kind, fingerprint


CONNECTOR = """\
# connector.yaml, written by `sftp-connector init`. Every section is here; paths are relative to this
# file. Check it with `sftp-connector validate --connect`.
name: {name}

sftp:
  host: {host}
  port: {port}
  username: {user}
  auth:
    method: key                        # password | key | key+password
    private_key: keys/id_ed25519       # made by init: give keys/id_ed25519.pub to the server's owner
    # password: ${{SFTP_PASSWORD}}       # for password or key+password (or password_file: /run/secrets/…)
  known_hosts: keys/known_hosts        # the server's host key, as init fetched and you confirmed it
  # host_key_fingerprint: "SHA256:…"   # or pin the key instead of known_hosts
  home: "~"                            # the login directory; "/" on a chrooted account
  timeout_s: 30
  retries: 3

pgp:
  enabled: true
  gnupg_home: keys/gnupg               # the connector's own GnuPG home, never ~/.gnupg
  decrypt:
    private_key: keys/connector.private.asc   # partners encrypt to keys/connector.public.asc
    passphrase_file: keys/pgp_passphrase      # 0600, made by init
    verify_keys: []                    # partner public key files, to check their signatures
    require_signature_from: []         # partner fingerprints: unsigned or wrongly signed files are refused
    # symmetric_passphrase: ${{PARTNER_SHARED_SECRET}}   # files encrypted with a passphrase only
  encrypt:
    recipients: []                     # partner key files or fingerprints: exports are encrypted to them
    sign: false                        # sign exports with the connector's key
    armor: false

store:
  url: sqlite:///state/connector.db    # or postgresql+psycopg://user@host/db (the [postgres] extra)

privacy:
  objectives: []                       # when set, only profiles consenting to one of them are processed
  consent_property: consented_objectives
  permission_property: permission_level

schedule:                              # for `sftp-connector daemon`; exactly one form
  timezone: UTC
  at: "02:00"                          # every day at 02:00
  # every_minutes: 60
  # times_per_day: 4
  # days_of_week: [mon, thu]
  # days_of_month: [1, 15]
  # weekday_of_month: {{week: first, day: mon}}

notifications:                         # both optional
  # email:
  #   to: [ops@example.com]
  #   when: failure                    # failure | always
  #   smtp: {{host: localhost, port: 25, starttls: false, from: connector@localhost}}
  # webhook:
  #   url: ${{WEBHOOK_URL}}
  #   headers: {{Authorization: "Bearer ${{WEBHOOK_TOKEN}}"}}

labels: {{}}                             # named lists of values for segments, e.g. vip_cities: [Amsterdam]

segments:
  newsletter:
    all:
      - {{property: newsletter, equals: "yes"}}
      - {{property: email, exists: true}}
"""

GOALS = {
    "customers": """\
# An import-profiles goal: customer files the partner drops, encrypted to the connector.
kind: import-profiles
name: customers
order: 10
files:
  - name: customers
    directory: in/customers            # relative to sftp.home
    pattern: "customers_*.csv.gpg"
stable_after_s: 30                     # a new or changed file must keep its size and mtime this long
identifiers:                           # tried in order; the first that matches wins
  - {field: email, property: email}
  - {field: customer_id, property: crm_id}
mappings:
  - {field: first_name, property: first_name, rule: set}
  - {field: phone, property: phone, rule: set_if_empty}
  - {field: interests, property: interests, rule: add}
  - {field: points, property: loyalty_points, rule: sum}
  - {field: newsletter, property: newsletter, rule: set}
groups: [{type: household, field: household}]
after_import: {move_to: archive/}
on_error: {move_to: error/}
""",
    "households": """\
# An import-groups goal: households that customers link to (groups: in customers.yaml).
kind: import-groups
name: households
order: 5
group_type: household
files: [{name: households, directory: in/households, pattern: "households_*.csv.gpg"}]
stable_after_s: 30
identifier: {field: household_id}
mappings:
  - {field: street, property: street}
  - {field: city, property: city}
""",
    "orders": """\
# Orders as timeline events, with their lines in a linked file, on profiles found by email.
kind: import-profiles
name: orders
order: 20
files:
  - {name: orders, directory: in/orders, pattern: "orders_*.csv.gpg"}
  - {name: lines, directory: in/orders, pattern: "lines_*.csv.gpg", link: {parent: order_id, child: order_id}}
stable_after_s: 30
allow_new_profiles: false
identifiers: [{field: email, property: email}]
mappings: [{field: amount, property: total_spent, rule: sum}]
events:
  - type: order
    id: order_id
    time: ordered_at
    properties: {total: amount}
    nested: [{name: products, file: lines, properties: {sku: sku, quantity: qty}}]
""",
    "newsletter": """\
# An export-profiles goal: the newsletter segment, back to the partner (encrypted to pgp.encrypt.recipients).
kind: export-profiles
name: newsletter
order: 30
segment: newsletter
directory: out/newsletter
filename: "newsletter_{now:%Y%m%d_%H%M%S}.csv"
columns:
  - {column: id, value: profile_id}
  - {column: email, property: email}
  - {column: first_name, property: first_name}
  - {column: segments, value: segments}
""",
}
