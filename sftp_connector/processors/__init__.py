"""A goal's `processors:`: built-in steps as polars expressions, plus plugins from the
entry-point group `sftp_connector.processors`, run in order on one batch of rows before mapping.

`build` checks every step's options at once (so `validate` reports them) and returns the
ready `Step`s; `run` applies them to a frame. Columns whose names start with `_` (`_row`,
`_row@orders`, …) belong to the connector: no step may change, rename or drop them. An
empty cell is null or "". Problems with a file's columns are `InputError`s; a cell a step
cannot convert is a `RowReject` and becomes empty.

This module is the registry: `build` (option checks, plugin loading) and `run` (applying the
steps, checking a plugin kept the `_` columns). `builtins` holds the built-in processors and
`BUILTINS`; `step` the types both share (`Step`, `Processed`, `Refused`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import polars as pl
import polars.selectors as cs

from sftp_connector.errors import ConfigError, InputError, RowReject
from sftp_connector.processors.builtins import BUILTINS
from sftp_connector.processors.step import Apply, Factory, Processed, Refused, Step, polars_reason

__all__ = ["BUILTINS", "GROUP", "Apply", "Factory", "Processed", "Processor", "Step", "build", "run"]

logger = logging.getLogger(__name__)

GROUP = "sftp_connector.processors"

Processor = Callable[[pl.DataFrame], pl.DataFrame]


# ── building ─────────────────────────────────────────────────────────────────────────


def build(configs: list[dict[str, Any]]) -> list[Step]:
    """Given a goal's `processors:` list, return its steps in order.

    Raise ConfigError listing every bad entry ("processors[2] (filter): …") if any is invalid.
    """
    plugins = _plugins()
    steps: list[Step] = []
    problems: list[str] = []
    for position, config in enumerate(configs):
        try:
            steps.append(_step(position, config, plugins))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return steps


def _step(position: int, config: Any, plugins: dict[str, EntryPoint]) -> Step:
    """Given one `processors:` entry, return its step. Raise ConfigError if it is invalid."""
    where = f"processors[{position}]"
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise ConfigError(f"{where}: needs `type` (the processor's name)")
    kind = config["type"]
    options = {key: value for key, value in config.items() if key != "type"}
    if kind in BUILTINS:
        factory = BUILTINS[kind]
    elif kind in plugins:
        factory = _plugin_factory(plugins[kind])
    else:
        found = ", ".join(sorted(plugins)) or "none"
        raise ConfigError(f"{where}: unknown type {kind!r} (built in: {', '.join(sorted(BUILTINS))}; plugins: {found})")
    try:
        return Step(kind, position, factory(options))
    except ValueError as exc:
        raise ConfigError(f"{where} ({kind}): {exc}") from exc


def _plugins() -> dict[str, EntryPoint]:
    """Return the installed plugins by type; one named like a built-in is ignored with a warning."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=GROUP):
        if point.name in BUILTINS:
            logger.warning("processor plugin %s ignored: %r is a built-in processor", point.value, point.name)
        elif point.name in found:
            logger.warning("processor plugin %s ignored: %r is already provided by %s", point.value, point.name,
                           found[point.name].value)
        else:
            found[point.name] = point
    return found


def _plugin_factory(point: EntryPoint) -> Factory:
    """Given a plugin's entry point, return a factory that loads it, calls it and checks its result."""

    def factory(options: dict[str, Any]) -> Apply:
        try:
            made = point.load()(options)
        except Exception as exc:  # a plugin may raise anything; the operator needs its words
            raise ValueError(f"plugin {point.value} failed: {type(exc).__name__}: {exc}") from exc
        if not callable(made):
            raise ValueError(f"plugin {point.value} returned {type(made).__name__}, not a callable")
        return _plugin_apply(made)

    return factory


def _plugin_apply(processor: Processor) -> Apply:
    """Given a plugin's callable, return a step that runs it and checks it kept the `_` columns."""

    def apply(frame: pl.DataFrame, label: str) -> Processed:
        try:
            result = processor(frame)
        except Exception as exc:  # a plugin may raise anything; the operator needs its words
            raise Refused(f"failed: {type(exc).__name__}: {exc}") from exc
        _check_internal(frame, result)
        return Processed(result, frame.height - result.height, [])

    return apply


def _check_internal(before: pl.DataFrame, after: Any) -> None:
    """Given a plugin's input and result, raise Refused unless every result row keeps its `_` values."""
    if not isinstance(after, pl.DataFrame):
        raise Refused(f"returned {type(after).__name__}, not a polars DataFrame")
    internal = [name for name in before.columns if name.startswith("_")]
    if not internal:
        return
    missing = [name for name in internal if name not in after.columns]
    if missing:
        raise Refused(f"dropped internal column(s) {', '.join(missing)}")
    if after.height > before.height:
        raise Refused(f"returned {after.height} rows for {before.height}: processors may not add rows")
    old, new = before.select(cs.by_name(internal)), after.select(cs.by_name(internal))
    if new.schema != old.schema or new.join(old, on=internal, how="anti", nulls_equal=True).height:
        raise Refused(f"changed internal column(s) {', '.join(internal)}")


# ── running ──────────────────────────────────────────────────────────────────────────


def run(steps: list[Step], frame: pl.DataFrame, *, label: str) -> Processed:
    """Given the steps, one batch of rows and its file name, return the processed rows, filtered count and rejects.

    Raise InputError naming the step if a field it needs is missing or the step fails on this file.
    """
    filtered, rejects = 0, list[RowReject]()
    for step in steps:
        try:
            done = step.apply(frame, label)
        except Refused as exc:
            raise InputError(f"processor {step.type}: {exc}", file=label) from exc
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"processor {step.type}: {polars_reason(exc)}", file=label) from exc
        logger.debug("%s: processors[%d] %s: %d rows, %d filtered, %d rejected", label, step.position, step.type,
                     done.frame.height, done.filtered, len(done.rejects))
        frame, filtered, rejects = done.frame, filtered + done.filtered, rejects + done.rejects
    return Processed(frame, filtered, rejects)
