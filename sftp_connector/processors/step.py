"""What a processor step is: the `Step` that `build` makes, the `Processed` result it returns,
and `Refused`, how it declines a file.

This module imports no other part of `processors`, so that both the built-ins and the
registry (build, run, plugins) can share these types without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from sftp_connector.errors import RowReject


@dataclass(frozen=True, slots=True)
class Processed:
    """The rows left after the steps, how many `filter` removed, and the cells that could not be converted."""

    frame: pl.DataFrame
    filtered: int
    rejects: list[RowReject]


Apply = Callable[[pl.DataFrame, str], Processed]
Factory = Callable[[dict[str, Any]], Apply]


@dataclass(frozen=True, slots=True)
class Step:
    """One ready processor: its `type`, its index in `processors:`, and what it does to a batch."""

    type: str
    position: int
    apply: Apply


class Refused(Exception):
    """A step cannot work on this file; `run` turns it into an InputError naming the step."""


def polars_reason(exc: Exception) -> str:
    """Given a polars error, return its cause in one line (the regex engine's `error:` line when there is one)."""
    lines = str(exc).splitlines()
    return next((line.removeprefix("error: ") for line in lines if line.startswith("error: ")), lines[0])
