"""The `sftp-connector` command line: thin commands over the runner, the store and the keyring.

Exit codes: 0 all goals succeeded; 1 a goal failed; 2 invalid configuration or usage.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperOption

from sftp_connector import entry, files, history, logs, notify, pgp, results, sftp, summary
from sftp_connector.config import load, models
from sftp_connector.errors import ConfigError, ConnectorError, GoalError
from sftp_connector.goals import runner
from sftp_connector.shown import visible
from sftp_connector.store import db, migrate, queries


def _shown_type(param: Any, ctx: Any) -> str | None:
    """Typer prints each parameter's Python type in --help (`<bool>` beside a flag, `<list[str]>` beside the
    goals): an operator reads the argument's name and the option's value type (`--rows <int>`), no more."""
    if isinstance(param, TyperArgument) or getattr(param, "is_flag", False):
        return None
    return _option_type(param, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _shown_type  # type: ignore[method-assign,assignment]
TyperArgument.display_type_rich = _shown_type  # type: ignore[method-assign,assignment]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Keep a profile store in sync with partners through PGP-encrypted CSV files on SFTP.")
profiles_app = typer.Typer(no_args_is_help=True, help="Read profiles from the store.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage the connector's own GnuPG home.")
groups_app = typer.Typer(no_args_is_help=True, help="Read groups (households, companies, …) from the store.")
events_app = typer.Typer(no_args_is_help=True, help="Read timeline events from the store.")
products_app = typer.Typer(no_args_is_help=True, help="Read the product store fed by imported orders.")
store_app = typer.Typer(no_args_is_help=True, help="Upgrade the store's schema to this version's.")
app.add_typer(profiles_app, name="profiles")
app.add_typer(groups_app, name="groups")
app.add_typer(events_app, name="events")
app.add_typer(products_app, name="products")
app.add_typer(keys_app, name="keys")
app.add_typer(store_app, name="store")

logger = logging.getLogger(__name__)
# Off a terminal, tables are read by scripts: wide enough that fingerprints and paths never wrap.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 240)
_state: dict[str, Any] = {}


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", envvar="SFTP_CONNECTOR_CONFIG",
                                         help="Path of connector.yaml.")] = Path("connector.yaml"),
    log_format: Annotated[str, typer.Option(help="auto | plain | json | rich")] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every operation.")] = False,
) -> None:
    """Keep a profile store in sync with partners through PGP-encrypted CSV files on SFTP."""
    if log_format not in ("auto", "plain", "json", "rich"):
        raise typer.BadParameter("expected auto, plain, json or rich", param_hint="--log-format")
    logs.setup(logging.DEBUG if verbose else logging.INFO, log_format)  # type: ignore[arg-type]
    _state["config_path"] = config
    if ctx.invoked_subcommand not in ("run", "daemon", "console"):  # they install their own handlers
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if entry.EARLY:
            raise typer.Exit(128 + entry.EARLY[0])


def _config(unused: frozenset[str] = frozenset()) -> load.Config:
    """Load the configuration (not the sections in `unused`: see load.load), or exit with code 2 printing every
    problem."""
    try:
        config = load.load(_state["config_path"], unused=unused)
    except ConfigError as exc:
        _fail_config(exc)
    logs.add_secrets(config.secrets())
    return config


def _fail_config(exc: ConfigError) -> None:
    err.print("[bold red]invalid configuration[/]:", highlight=False)
    for problem in exc.problems:
        err.print(f"  {visible(problem)}", markup=False, highlight=False)
    raise typer.Exit(2)


def _store(config: load.Config, *, for_upgrade: bool = False) -> db.Store:
    """Open the store, or exit with code 2 (bad URL) or 1 (unreachable, or at another schema revision)."""
    try:
        return db.open_store(config.connector.store.url, lock_timeout_s=config.connector.store.lock_timeout_s,
                             config=Path(_state["config_path"]).resolve(), for_upgrade=for_upgrade)
    except ConfigError as exc:
        _fail_config(exc)
    except GoalError as exc:
        err.print(f"store: {visible(str(exc))}", markup=False)
        raise typer.Exit(1) from exc
    raise AssertionError("unreachable")


@app.command()
def run(
    goals: Annotated[list[str] | None, typer.Argument(metavar="GOAL",
                                                      help="Goals to run (default: every enabled goal).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Do everything but write, move or upload.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-import files even when unchanged.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Run goals now, in order; exit 1 if any goal failed, 128 + the signal's number if SIGTERM or SIGINT
    stopped it (143, 130): the file in hand is rolled back and the run recorded interrupted."""
    with _stop_on_signals() as (stop, caught):
        config = _config()
        store = _store(config)
        try:
            with summary.progress_bars(err) as progress:
                result = runner.run(config, store, names=goals or [], dry_run=dry_run, force=force,
                                    progress=progress, stop=stop)
        except ConfigError as exc:
            _fail_config(exc)
        except GoalError as exc:  # the store failed before or after the goals: nothing was run, or recorded
            err.print(f"store: {visible(str(exc))}", markup=False)
            raise typer.Exit(128 + caught[0] if caught else 1) from exc
        finally:
            store.dispose()
    notify.notify(config.connector.notifications, result, connector_name=config.connector.name)
    if as_json:
        sys.stdout.write(orjson.dumps(result.as_json()).decode() + "\n")
    else:
        summary.print_summary(result, out)
    raise typer.Exit(128 + caught[0] if caught else result.exit_code)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[tuple[threading.Event, list[int]]]:
    """Catch SIGTERM and SIGINT as the daemon does while the block runs: set the yielded event (the runner
    stops at the next file or batch, rolling back the file in hand) and note the signal; one that came while
    starting counts. The handlers before are put back after."""
    stop, caught = threading.Event(), list(entry.EARLY)
    before = {number: signal.getsignal(number) for number in entry.STOP_SIGNALS}

    def handle(number: int, _frame: Any) -> None:
        if not caught:
            logging.getLogger(__name__).info("received %s: the file in hand is rolled back and the run recorded "
                                             "interrupted", signal.Signals(number).name)
        caught.append(number)
        stop.set()

    for number in entry.STOP_SIGNALS:
        signal.signal(number, handle)
    if caught:
        logging.getLogger(__name__).info("received %s while starting: the run is recorded interrupted",
                                         signal.Signals(caught[0]).name)
        stop.set()
    try:
        yield stop, caught
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


@app.command("daemon")
def daemon_command(
    health_port: Annotated[int | None, typer.Option("--health-port", help="Serve /healthz and /metrics here.")] = None,
    health_host: Annotated[str, typer.Option("--health-host", help="Address of the health endpoint.")] = "127.0.0.1",
    console_port: Annotated[int | None, typer.Option("--console-port", help="Serve the operator console here "
                                                     "(with /healthz and /metrics).")] = None,
    console_host: Annotated[str, typer.Option("--console-host", help="Address of the console (not loopback: "
                                              "needs console.users).")] = "127.0.0.1",
) -> None:
    """Run the goals on the schedule until SIGTERM or SIGINT; exit 0 after a clean stop."""
    from sftp_connector import daemon

    config = _config()
    _store(config).dispose()  # a store that needs `store upgrade` stops the start here, saying so
    try:
        code = daemon.main(_state["config_path"], health_host=health_host, health_port=health_port,
                           console_host=console_host, console_port=console_port)
    except ConfigError as exc:
        _fail_config(exc)
    except GoalError as exc:
        err.print(f"store: {visible(str(exc))}", markup=False)
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


@app.command("console")
def console_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (not loopback: needs console.users).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8470,
    hash_password: Annotated[bool, typer.Option("--hash-password", help="Read a password from the terminal (or "
                                                "standard input) and print the line for a password_hash_file.")
                             ] = False,
) -> None:
    """Serve the operator console until SIGTERM or SIGINT (127.0.0.1:8470 unless told otherwise)."""
    from sftp_connector.console import auth
    from sftp_connector.console import server as console_server

    if hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
        if len(password) < 12:
            err.print("the password is too short: use at least 12 characters", markup=False)
            raise typer.Exit(2)
        out.print(auth.hash_password(password), markup=False)
        return
    config = _config()
    try:
        console_server.check_bind(host, config)
    except ConfigError as exc:
        _fail_config(exc)
    store = _store(config)
    source = console_server.ConfigSource(Path(_state["config_path"]), config)
    console = console_server.build(source, store, threading.Event())  # uvicorn catches the signals
    if entry.EARLY:  # a signal while the console started: leave before serving
        store.dispose()
        raise typer.Exit(128 + entry.EARLY[0])
    try:
        console_server.serve_forever(console, host, port)
    finally:
        store.dispose()
        if config.connector.pgp.enabled and config.gnupg_home.exists():
            pgp.stop_agent(config.gnupg_home)  # the console's reads kept it


@app.command()
def validate(
    connect: Annotated[bool, typer.Option("--connect", help="Also log in, count the files each pattern matches "
                                                             "and check each export directory.")] = False,
) -> None:
    """Check the configuration, goals and keys and show the schedule; exit 2 if anything is wrong."""
    config = _config()
    known_hosts = config.connector.sftp.known_hosts
    problem = sftp.known_hosts_problem(known_hosts) if known_hosts is not None else None
    if problem:
        _fail_config(ConfigError(f"{config.path.name}: at sftp.known_hosts: {problem}"))
    for warning in _overlaps(config):
        err.print(f"warning: {visible(warning)}", markup=False)
    _show_schedule(config)
    if connect:
        _check_connection(config)
    out.print(f"configuration OK: {len(config.goals)} goal(s) in {config.base_dir / 'goals'}", markup=False)


def _show_schedule(config: load.Config) -> None:
    """Print the schedule in words and its next five run times (in its timezone)."""
    from sftp_connector import schedule

    plan, times = config.connector.schedule, schedule.upcoming(config.connector.schedule)
    if plan is None or times is None:
        out.print("schedule: none (runs only when started: sftp-connector run)", markup=False)
        return
    out.print(f"schedule: {schedule.in_words(plan)}", markup=False)
    out.print("next runs:", markup=False)
    for moment in times:
        out.print(f"  {moment}", markup=False)


@app.command("preview")
def preview_command(
    goal: Annotated[str, typer.Argument(metavar="GOAL", help="The import goal to preview.")],
    rows: Annotated[int, typer.Option("--rows", min=0, help="Rows of each file to show.")] = 10,
) -> None:
    """Show an import goal's matched files, detected columns and first rows (decrypted); change nothing."""
    from sftp_connector import preview

    config = _config()
    store = _store(config)
    try:
        preview.show(config, store, goal, rows=rows, console=out)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"preview: {visible(problem)}", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    except GoalError as exc:
        err.print(f"preview failed: {visible(str(exc))}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    finally:
        store.dispose()


def _overlaps(config: load.Config) -> list[str]:
    """Return a warning for every property that more than one goal writes."""
    writers: dict[str, list[str]] = {}
    for goal in config.goals:
        if isinstance(goal, models.ImportProfiles):
            for mapping in goal.mappings:
                writers.setdefault(goal.prefix + mapping.property, []).append(goal.name)
    return [f"property {prop} is written by several goals: {', '.join(names)}"
            for prop, names in writers.items() if len(set(names)) > 1]


def _check_connection(config: load.Config) -> None:
    """Log in; print how many files each import pattern matches now and whether each export directory is
    there and writable. Exit 1 if something cannot be reached or written."""
    failed = False
    try:
        with sftp.connect(config.connector.sftp) as session:
            for goal in config.goals:
                try:
                    for line in _goal_check(session, goal):
                        out.print(visible(f"{goal.name}: {line}"), markup=False)
                except GoalError as exc:
                    err.print(visible(f"{goal.name}: {exc}"), markup=False)
                    failed = True
    except GoalError as exc:
        err.print(f"connection check failed: {visible(str(exc))}", markup=False)
        raise typer.Exit(1) from exc
    if failed:
        err.print("connection check failed: see above", markup=False)
        raise typer.Exit(1)


def _goal_check(session: sftp.Session, goal: Any) -> list[str]:
    """One goal's lines for `validate --connect`. Raise GoalError if its directory cannot be used."""
    if isinstance(goal, models.ExportProfiles):
        directory = session.where(goal.directory, "upload to")
        there = session.check_writable(goal.directory)
        return [f"{directory}: exists, writable" if there else f"{directory}: missing: the first export creates it"]
    lines = []
    for file in goal.files:
        directory = session.where(file.directory, "list")
        listing = session.list(directory)
        matched = files.match(file, listing)
        lines.append(f"{directory}: {len(matched)} file(s) match {file.pattern or file.regex} now "
                     f"({len(listing)} in the directory)")
    return lines


@app.command("history")
def history_command(
    goal: Annotated[str | None, typer.Option(help="Only runs of this goal.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run, newest first.")] = False,
) -> None:
    """Show past runs, newest first."""
    with _store_reading() as store:
        runs = [run.as_json() for run in history.recent(store, goal=goal, limit=limit)]
    if as_json:
        for entry in runs:
            sys.stdout.write(orjson.dumps(entry).decode() + "\n")
        return
    table = Table()
    for column in ("run", "started", "status", "goal", "goal status", "files", "rows", "created", "updated",
                   "unique", "last profiles", "error"):
        table.add_column(column, overflow="fold")
    for entry in runs:
        for g in entry["goals"] or [{"goal": "", "status": "", "files": [], "profiles_created": "",
                                     "profiles_updated": "", "unique_profiles_exchanged": "", "last_profiles": [],
                                     "error": ""}]:
            table.add_row(entry["run"], entry["started_at"], entry["status"], g["goal"], g["status"],
                          _files_line(g["files"]), _rows_line(g["files"]), str(g["profiles_created"]),
                          str(g["profiles_updated"]), str(g["unique_profiles_exchanged"]),
                          " ".join(g["last_profiles"]), visible(g["error"] or ""))
    out.print(table)


def _files_line(files: list[dict[str, Any]]) -> str:
    """Files seen, by status: `3 seen: 1 imported, 2 skipped_unchanged`."""
    counts: dict[str, int] = {}
    for file in files:
        counts[file["status"]] = counts.get(file["status"], 0) + 1
    return f"{len(files)} seen" + (": " + ", ".join(f"{n} {s}" for s, n in counts.items()) if counts else "")


def _rows_line(files: list[dict[str, Any]]) -> str:
    """Row totals over the goal's files: read / applied / unchanged / rejected / exported, where not zero."""
    names = ("rows_read", "rows_applied", "rows_unchanged", "rows_rejected", "cells_rejected", "rows_exported")
    totals = {name: sum(int(f.get(name) or 0) for f in files) for name in names}
    return ", ".join(f"{value} {name.removeprefix('rows_')}" for name, value in totals.items() if value)


def profile_json(profile: dict[str, Any]) -> dict[str, Any]:
    """Given a stored profile, return it in the `profiles dump` shape."""
    return {"id": str(profile["id"]), "properties": profile["properties"], "groups": profile["groups"],
            "created_at": results.iso(profile["created_at"]), "updated_at": results.iso(profile["updated_at"])}


@profiles_app.command("dump")
def profiles_dump() -> None:
    """Print every profile as one JSON object per line."""
    _dump(lambda conn: map(profile_json, queries.iter_profiles(conn)))


@groups_app.command("dump")
def groups_dump() -> None:
    """Print every group as one JSON object per line."""
    _dump(lambda conn: ({**group, "created_at": results.iso(group["created_at"]),
                         "updated_at": results.iso(group["updated_at"])} for group in queries.iter_groups(conn)))


@events_app.command("dump")
def events_dump() -> None:
    """Print every timeline event as one JSON object per line."""
    _dump(lambda conn: ({**event, "profile_id": str(event["profile_id"])} for event in queries.iter_events(conn)))


@products_app.command("dump")
def products_dump() -> None:
    """Print every product (sku, times_bought, last_bought) as one JSON object per line."""
    _dump(queries.iter_products)


def _dump(records: Any) -> None:
    """Given a function from a connection to records, print them as JSON lines."""
    with _store_reading() as store, store.connection() as conn:
        for record in records(conn):
            sys.stdout.write(orjson.dumps(record).decode() + "\n")


@contextlib.contextmanager
def _store_reading() -> Iterator[db.Store]:
    """The store for a read-only command (only the store's secrets are needed); a database failure while
    the block reads prints `store: …` and exits 1."""
    store = _store(_config(load.STORE_ONLY))
    try:
        yield store
    except GoalError as exc:
        err.print(f"store: {visible(str(exc))}", markup=False)
        raise typer.Exit(1) from exc
    finally:
        store.dispose()


@profiles_app.command("get")
def profiles_get(by: Annotated[str, typer.Option("--by", help="PROPERTY=VALUE")]) -> None:
    """Print the profile holding PROPERTY=VALUE as JSON; exit 1 if there is none."""
    if "=" not in by:
        raise typer.BadParameter("expected PROPERTY=VALUE", param_hint="--by")
    prop, value = by.split("=", 1)
    with _store_reading() as store, store.connection() as conn:
        profile = queries.profile_by(conn, prop, value)
    if profile is None:
        err.print(f"no profile with {visible(prop)}={visible(value)}", markup=False)
        raise typer.Exit(1)
    sys.stdout.write(orjson.dumps(profile_json(profile)).decode() + "\n")


@keys_app.command("import")
def keys_import(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An OpenPGP key file (armored or binary).")],
) -> None:
    """Import a key file into the connector's GnuPG home."""
    config = _config(load.KEYS_ONLY)
    try:
        with _keyring(config) as keyring:
            fingerprints = pgp.import_keys(keyring, file)
    except ConnectorError as exc:
        err.print(visible(str(exc)), markup=False)
        raise typer.Exit(1) from exc
    for fingerprint in fingerprints:
        out.print(f"imported {fingerprint}", markup=False)


@keys_app.command("list")
def keys_list() -> None:
    """List the keys in the connector's GnuPG home."""
    config = _config(load.KEYS_ONLY)
    table = Table()
    for column in ("fingerprint", "user ids", "secret", "expires"):
        table.add_column(column)
    with _keyring(config) as keyring:
        listed = pgp.list_keys(keyring)
    for key in listed:
        table.add_row(key.fingerprint, visible(", ".join(key.uids)), "yes" if key.secret else "no", key.expires or "")
    out.print(table)


@contextlib.contextmanager
def _keyring(config: load.Config) -> Iterator[pgp.Keyring]:
    """The connector's keyring, its gpg-agent stopped after (as `run` does): a command leaves no process."""
    try:
        keyring = pgp.open_keyring(config.connector.pgp, config.gnupg_home)
    except ConfigError as exc:
        _fail_config(exc)
        raise AssertionError("unreachable") from exc
    try:
        yield keyring
    finally:
        pgp.stop_agent(keyring)


@store_app.command("upgrade")
def store_upgrade(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Path of connector.yaml (also accepted "
                                                "before `store`).")] = None,
) -> None:
    """Upgrade the store to this version's schema in one transaction (SQLite: after copying the file beside
    it); exit 1 if it fails, leaving the store as it was."""
    if config is not None:
        _state["config_path"] = config
    store = _store(_config(load.STORE_ONLY), for_upgrade=True)
    try:
        done = migrate.upgrade(store)
    except GoalError as exc:
        err.print(f"store: {visible(str(exc))}", markup=False)
        raise typer.Exit(1) from exc
    finally:
        store.dispose()
    if done.before == done.after:
        out.print(f"the store is already at revision {done.after}", markup=False)
        return
    if done.backup is not None:
        out.print(f"copied the store to {done.backup} before upgrading it", markup=False)
    out.print(f"upgraded the store from revision {done.before} to {done.after}", markup=False)


@app.command()
def demo(
    keep: Annotated[Path | None, typer.Option(help="Keep the demo's folder here instead of a temp dir.")] = None,
) -> None:
    """Run a self-contained tour: a loopback SFTP server, encrypted sample files, an import, a summary."""
    from sftp_connector import demo as tour

    os.environ.setdefault("SFTP_CONNECTOR_DEMO", "1")
    raise typer.Exit(tour.main(keep, out))


@app.command("init")
def init_command(
    directory: Annotated[Path, typer.Argument(metavar="DIR",
                                              help="The folder to write the deployment in (created if missing).")],
    host: Annotated[str | None, typer.Option(help="The SFTP server: its host key is fetched and shown.")] = None,
    port: Annotated[int, typer.Option(help="The SFTP server's port.")] = 22,
    user: Annotated[str, typer.Option(help="The login name on the SFTP server.")] = "acme",
    accept_host_key: Annotated[str | None, typer.Option(
        help="The host key's SHA256 fingerprint, checked out of band: written without asking.")] = None,
    pgp_key: Annotated[str, typer.Option(help="ed25519 (default) or rsa3072 for older partner tools.")] = "ed25519",
) -> None:
    """Write a complete deployment: connector.yaml, a goal of each kind, the SSH and OpenPGP keys, known_hosts."""
    from sftp_connector import init

    if pgp_key not in pgp.keys.KEY_ALGORITHMS:
        raise typer.BadParameter("expected ed25519 or rsa3072", param_hint="--pgp-key")
    server = init.Server(host, port, user) if host else None
    try:
        made = init.create(directory, server, accept_host_key=accept_host_key, pgp_algorithm=pgp_key,
                           confirm=lambda question: typer.confirm(question, default=False))
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"init: {visible(problem)}", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    except GoalError as exc:
        err.print(visible(str(exc)), markup=False, highlight=False)
        raise typer.Exit(1) from exc
    _show_made(directory, made)


def _show_made(directory: Path, made: Any) -> None:
    say = lambda text="": out.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"wrote a deployment in {directory}: connector.yaml, goals/ (customers, households, orders, newsletter), "
        "keys/")
    if made.host_key:
        say(f"keys/known_hosts holds the server's key {made.host_key}")
    else:
        say("no host key yet: set sftp.host and run init with --host in another folder, or see keys/README.md")
    say("\nGive the SFTP server's owner this public key (for the account's authorized_keys):")
    say(f"  {made.ssh_public_key}")
    say(f"\nGive partners the connector's OpenPGP public key ({made.pgp_fingerprint}), to encrypt to:")
    say(f"  {made.pgp_public_key}")
    say(made.pgp_public_key.read_text().rstrip())
    say(f"\nNext: sftp-connector --config {directory / 'connector.yaml'} validate --connect")
