"""The built-in processors: each a factory that checks its options (raising ValueError, which
`build` turns into a ConfigError naming the entry) and returns a step applying polars expressions.

`BUILTINS` maps each `type:` to its factory. Text steps work column-wise; `filter`, `rename`
and `drop` change rows or columns; `parse_date` and `normalize_phone` convert cells, reporting
each one they cannot convert as a `RowReject` and leaving it empty. Split from the registry
(`processors/__init__.py`) so that adding a built-in touches only this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import polars as pl
import polars.selectors as cs

from sftp_connector.errors import RowReject
from sftp_connector.processors.step import Apply, Factory, Processed, Refused, polars_reason

OPERATORS = ("equals", "in", "not_in", "matches", "exists")


# ── helpers ──────────────────────────────────────────────────────────────────────────


def _col(name: str) -> pl.Expr:
    """Given a column name, return an expression for exactly it (`pl.col` reads `^…$` as a pattern)."""
    return cs.by_name(name).as_expr()


def _require(frame: pl.DataFrame, fields: list[str]) -> None:
    """Given a frame and the fields a step names, raise Refused if any is not a column."""
    missing = [name for name in fields if name not in frame.columns]
    if missing:
        columns = ", ".join(name for name in frame.columns if not name.startswith("_"))
        raise Refused(f"field(s) {', '.join(missing)} not in the file (columns: {columns})")


# ── options ──────────────────────────────────────────────────────────────────────────


def _options(options: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    """Given a step's options, raise ValueError if one is unknown or a required one is missing."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(options))
    if missing:
        raise ValueError(f"missing option(s) {', '.join(missing)}")


def _field(value: Any, key: str) -> str:
    """Given an option naming one field, return it. Raise ValueError if it is not a CSV field name."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a field name")
    if value.startswith("_"):
        raise ValueError(f"{key}: {value} is an internal column (names starting with _ are the connector's)")
    return value


def _fields(value: Any, key: str = "fields") -> list[str]:
    """Given a `fields` option, return its names without repeats. Raise ValueError if it is not a list of names."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key} must be a non-empty list of field names")
    return list(dict.fromkeys(_field(item, key) for item in value))


def _text(value: Any, key: str) -> str:
    """Given a compared value, return it as cell text. Raise ValueError for values YAML may have changed."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise ValueError(f"{key} must be text (quote {value!r} in the YAML)")


def _pattern(value: Any, key: str) -> str:
    """Given a regex option, return it. Raise ValueError if polars' regex engine refuses it."""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a regular expression")
    try:
        pl.select(pl.lit("").str.contains(value))
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{key}: invalid regular expression {value!r}: {polars_reason(exc)}") from exc
    return value


# ── built-ins: column-wise text ──────────────────────────────────────────────────────


def _columnwise(transform: Callable[[pl.Expr], pl.Expr], *, default_all: bool = False) -> Factory:
    """Given a per-column transform, return a factory for a step applying it to `fields`
    (or, with default_all, to every String column not starting with `_` when `fields` is omitted)."""

    def factory(options: dict[str, Any]) -> Apply:
        _options(options, {"fields"}, set() if default_all else {"fields"})
        fields = _fields(options["fields"]) if "fields" in options else None

        def apply(frame: pl.DataFrame, label: str) -> Processed:
            names = fields if fields is not None else [
                name for name, dtype in frame.schema.items() if dtype == pl.String and not name.startswith("_")]
            _require(frame, names)
            return Processed(frame.with_columns(transform(_col(name)).alias(name) for name in names), 0, [])

        return apply

    return factory


def _hash(options: dict[str, Any]) -> Apply:
    """Given `fields` and an optional `salt`, return a step replacing each non-empty value by sha256(salt + value)."""
    _options(options, {"fields", "salt"}, {"fields"})
    salt = options.get("salt") or ""
    if not isinstance(salt, str):
        raise ValueError("salt must be text")

    def digest(values: pl.Series) -> pl.Series:
        """Hash in Python, value by value: polars has no sha256."""
        hashed = [hashlib.sha256((salt + value).encode()).hexdigest() if value else value for value in values]
        return pl.Series(values.name, hashed, dtype=pl.String)

    hashing = _columnwise(lambda v: v.map_batches(digest, return_dtype=pl.String, is_elementwise=True))
    return hashing({"fields": options["fields"]})


# ── built-ins: rows and columns ──────────────────────────────────────────────────────


def _filter(options: dict[str, Any]) -> Apply:
    """Given `where: {field: F, <operator>: value}`, return a step keeping the rows whose F matches."""
    _options(options, {"where"}, {"where"})
    where = options["where"]
    if not isinstance(where, dict):
        raise ValueError("where must be a mapping like {field: country, in: [NL, BE]}")
    unknown = sorted(set(where) - {"field", *OPERATORS})
    if unknown:
        raise ValueError(f"where: unknown key(s) {', '.join(unknown)}")
    operators = [key for key in OPERATORS if key in where]
    if len(operators) != 1:
        raise ValueError(f"where needs exactly one of {', '.join(OPERATORS)}")
    field = _field(where.get("field"), "where.field")
    keep = _condition(operators[0], where[operators[0]])

    def apply(frame: pl.DataFrame, label: str) -> Processed:
        _require(frame, [field])
        kept = frame.filter(keep(_col(field).fill_null("")))
        return Processed(kept, frame.height - kept.height, [])

    return apply


def _condition(operator: str, value: Any) -> Callable[[pl.Expr], pl.Expr]:
    """Given a `where` operator and its value, return the keep-condition on a cell (empty cells are "").

    `not_in` keeps empty cells (they are in no list) unless "" is listed; `matches` searches, like
    `re.search`, because polars' `str.contains` does: anchor with ^…$ for a whole-value match.
    Raise ValueError if the value does not fit the operator.
    """
    key = f"where.{operator}"
    if operator == "exists":
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return (lambda cell: cell != "") if value else (lambda cell: cell == "")
    if operator == "matches":
        pattern = _pattern(value, key)
        return lambda cell: cell.str.contains(pattern)
    if operator == "equals":
        text = _text(value, key)
        return lambda cell: cell == text
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key} must be a non-empty list")
    texts = [_text(item, key) for item in value]
    return (lambda cell: cell.is_in(texts)) if operator == "in" else (lambda cell: ~cell.is_in(texts))


def _rename(options: dict[str, Any]) -> Apply:
    """Given `fields: {old: new}`, return a step renaming those columns in place."""
    _options(options, {"fields"}, {"fields"})
    mapping = options["fields"]
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError("fields must be a mapping {old name: new name}")
    names = {_field(old, "fields"): _field(new, "fields") for old, new in mapping.items()}
    if len(set(names.values())) != len(names):
        raise ValueError("fields renames two columns to the same name")

    def apply(frame: pl.DataFrame, label: str) -> Processed:
        _require(frame, list(names))
        taken = [new for new in names.values() if new in frame.columns and new not in names]
        if taken:
            raise Refused(f"cannot rename onto existing column(s) {', '.join(taken)}")
        return Processed(frame.rename(names), 0, [])

    return apply


def _drop(options: dict[str, Any]) -> Apply:
    """Given `fields`, return a step removing those columns."""
    _options(options, {"fields"}, {"fields"})
    fields = _fields(options["fields"])

    def apply(frame: pl.DataFrame, label: str) -> Processed:
        _require(frame, fields)
        return Processed(frame.drop(fields), 0, [])

    return apply


# ── built-ins: conversions with rejects ──────────────────────────────────────────────


def _converting(fields: list[str], convert: Callable[[pl.Expr], pl.Expr], reason: Callable[[str], str]) -> Apply:
    """Given fields, a conversion (null where a value is invalid) and the reason text, return a step
    replacing non-empty values by their conversion and reporting each invalid one as a RowReject."""

    def apply(frame: pl.DataFrame, label: str) -> Processed:
        _require(frame, fields)
        rejects: list[RowReject] = []
        for name in fields:
            checked = frame.select(row=_col("_row"), value=_col(name), new=convert(_col(name).str.strip_chars()))
            empty = pl.col("value").str.strip_chars().fill_null("") == ""
            checked = checked.with_columns(bad=~empty & pl.col("new").is_null(),
                                           out=pl.when(empty).then(pl.col("value")).otherwise(pl.col("new")))
            bad = checked.filter(pl.col("bad")).select("row", "value").iter_rows()
            rejects += [RowReject(label, int(row), name, reason(name), value[:200]) for row, value in bad]
            frame = frame.with_columns(checked.get_column("out").alias(name))
        return Processed(frame, 0, rejects)

    return apply


ISO = (r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:[T ](?P<hm>[0-9]{2}:[0-9]{2})(?::(?P<sec>[0-9]{2})(?:[.,][0-9]+)?)?"
       r"(?P<tz>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$")
DATE, NAIVE, AWARE = "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"


def _iso_date(value: pl.Expr) -> pl.Expr:
    """Given a String expression, return its ISO 8601 date or date-time in canonical form, else null."""
    parts = value.str.extract_groups(ISO)
    date, hm, sec, tz = (parts.struct.field(name) for name in ("date", "hm", "sec", "tz"))
    naive = date + "T" + hm + ":" + sec.fill_null("00")
    offset = pl.when(tz.str.to_uppercase() == "Z").then(pl.lit("+00:00")) \
        .when(tz.str.len_chars() == 3).then(tz + ":00").otherwise(tz)
    return pl.when(hm.is_null()).then(date.str.to_date(DATE, strict=False).dt.to_string(DATE)) \
        .when(tz.is_null()).then(naive.str.to_datetime(NAIVE, strict=False).dt.to_string(NAIVE)) \
        .otherwise((naive + offset).str.to_datetime(NAIVE + "%z", strict=False).dt.to_string(AWARE))


def _given_date(fmt: str) -> Callable[[pl.Expr], pl.Expr]:
    """Given a strftime format, return a parser to canonical ISO text: date, date-time, or UTC date-time
    when the format has an offset (%z)."""
    if re.search(r"%[:#]*z", fmt):
        return lambda v: v.str.to_datetime(fmt, strict=False, time_zone="UTC").dt.to_string(AWARE)
    if re.search(r"%[-_0^#]?[HIklMSTRXcrs]", fmt):
        return lambda v: v.str.to_datetime(fmt, strict=False).dt.to_string(NAIVE)
    return lambda v: v.str.to_date(fmt, strict=False).dt.to_string(DATE)


def _parse_date(options: dict[str, Any]) -> Apply:
    """Given `fields` and optional `format`/`formats`, return a step rewriting dates as ISO 8601."""
    _options(options, {"fields", "format", "formats"}, {"fields"})
    fields = _fields(options["fields"])
    if not isinstance(options.get("formats", []), list):
        raise ValueError("formats must be a list of strftime formats")
    formats = ([options["format"]] if "format" in options else []) + options.get("formats", [])
    parsers = [_iso_date] + [_given_date(_format(fmt)) for fmt in formats]
    expected = " or ".join(["ISO 8601", *formats])
    return _converting(fields, lambda v: pl.coalesce(parse(v) for parse in parsers),
                       lambda field: f"`{field}` is not a date (expected {expected})")


def _format(fmt: Any) -> str:
    """Given a `format` option, return it. Raise ValueError if polars cannot parse with it."""
    if not isinstance(fmt, str) or "%" not in fmt:
        raise ValueError(f"format {fmt!r} must be a strftime format like %d/%m/%Y")
    try:
        pl.select(_given_date(fmt)(pl.lit("", dtype=pl.String)))
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"format {fmt!r}: {polars_reason(exc)}") from exc
    return fmt


def _phone(value: pl.Expr, country: str | None) -> pl.Expr:
    """Given a String expression, return each value as +?digits (6 to 15), else null."""
    international = value.str.contains(r"^(\+|00)")
    clean = pl.when(international).then(value.str.replace_all("(0)", "", literal=True)).otherwise(value)
    clean = clean.str.replace_all(r"[\s\-.()/]", "").str.replace(r"^00", "+")
    if country:
        clean = clean.str.replace(r"^0", country, literal=False)
    return pl.when(clean.str.contains(r"^\+?[0-9]{6,15}$")).then(clean)


def _normalize_phone(options: dict[str, Any]) -> Apply:
    """Given `fields` and an optional `default_country_code` ("+31"), return a step cleaning phone numbers."""
    _options(options, {"fields", "default_country_code"}, {"fields"})
    fields = _fields(options["fields"])
    country = options.get("default_country_code")
    if country is not None and not (isinstance(country, str) and re.fullmatch(r"\+[1-9][0-9]{0,3}", country)):
        raise ValueError(f"default_country_code must look like +31, not {country!r}")
    return _converting(fields, lambda v: _phone(v, country),
                       lambda field: f"`{field}` is not a phone number (expected 6 to 15 digits, optionally after +)")


def _email(value: pl.Expr) -> pl.Expr:
    """Given addresses, return them stripped and lowercased; nothing else, so an invalid one stays visible."""
    return value.str.strip_chars().str.to_lowercase()


def _trim(value: pl.Expr) -> pl.Expr:
    """Given text, return it without surrounding (Unicode) whitespace."""
    return value.str.strip_chars()


def _lower(value: pl.Expr) -> pl.Expr:
    """Given text, return it lowercased by Unicode rules."""
    return value.str.to_lowercase()


def _upper(value: pl.Expr) -> pl.Expr:
    """Given text, return it uppercased by Unicode rules (ß becomes SS)."""
    return value.str.to_uppercase()


BUILTINS: dict[str, Factory] = {
    "normalize_email": _columnwise(_email),
    "trim": _columnwise(_trim, default_all=True),
    "lowercase": _columnwise(_lower),
    "uppercase": _columnwise(_upper),
    "filter": _filter,
    "rename": _rename,
    "drop": _drop,
    "hash": _hash,
    "parse_date": _parse_date,
    "normalize_phone": _normalize_phone,
}
