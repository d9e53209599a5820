"""The base of every config model (unknown keys refused, values frozen), sizes, and the shared literal types."""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

Rule = Literal["set", "set_if_empty", "set_or_clear", "add", "sum"]
RULES: tuple[str, ...] = get_args(Rule)
AuthMethod = Literal["password", "key", "key+password"]
Compression = Literal["auto", "none", "gzip", "bz2", "zip"]
GoalKind = Literal["import-groups", "import-profiles", "export-profiles"]
GOAL_KINDS: tuple[str, ...] = get_args(GoalKind)

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class Model(BaseModel):
    """Base of every config model: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_size(value: object) -> int:
    """Given a size such as 10GiB, 500MB or 1024, return it in bytes. Raise ValueError if malformed."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 10GiB or 500MB, got {value!r}")
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 10GiB or 500MB, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


