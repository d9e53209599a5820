"""The built-in processors cell by cell, their config messages, and the guard around `_` columns."""

from __future__ import annotations

import hashlib
from typing import Any

import polars as pl
import pytest

from sftp_connector import errors, processors
from sftp_connector.errors import RowReject

LABEL = "customers_1.csv"


def frame(**columns: list[Any]) -> pl.DataFrame:
    """Given String columns, return them as a batch with `_row` (1-based) and an internal `_row@orders`."""
    height = len(next(iter(columns.values())))
    return pl.DataFrame({"_row": list(range(1, height + 1)), "_row@orders": [None] * height, **columns},
                        schema_overrides={"_row@orders": pl.Int64, **dict.fromkeys(columns, pl.String)})


def run(configs: list[dict[str, Any]], batch: pl.DataFrame) -> processors.Processed:
    """Given `processors:` entries and a batch, return what the steps make of it."""
    return processors.run(processors.build(configs), batch, label=LABEL)


def column(configs: list[dict[str, Any]], values: list[str | None], name: str = "x") -> list[str | None]:
    """Given `processors:` entries and one column's values, return the processed values."""
    return run(configs, frame(**{name: values})).frame.get_column(name).to_list()


def config_error(configs: list[dict[str, Any]]) -> list[str]:
    """Given invalid `processors:` entries, return the problems `build` reports."""
    with pytest.raises(errors.ConfigError) as caught:
        processors.build(configs)
    return caught.value.problems


# ── text ──────────────────────────────────────────────────────────────────────────────


def test_normalize_email_trims_and_lowercases_only() -> None:
    values = ["  Ann.Lee+Tag@Example.COM ", "ÉMILE@Café.BE", "", None, "not an email"]
    assert column([{"type": "normalize_email", "fields": ["x"]}], values) == [
        "ann.lee+tag@example.com", "émile@café.be", "", None, "not an email"]


def test_trim_defaults_to_every_field_but_never_internal_columns() -> None:
    batch = frame(**{"a": [" 1 ", "\u00a02\u2003"], "orders.amount": ["\t3", None]}).with_columns(
        _note=pl.lit("  keep  "))
    done = run([{"type": "trim"}], batch)
    assert done.frame.to_dict(as_series=False) == {
        "_row": [1, 2], "_row@orders": [None, None], "a": ["1", "2"], "orders.amount": ["3", None],
        "_note": ["  keep  ", "  keep  "]}


def test_lowercase_and_uppercase_are_unicode_aware() -> None:
    assert column([{"type": "lowercase", "fields": ["x"]}], ["ÀB", "İ", "", None]) == ["àb", "i̇", "", None]
    assert column([{"type": "uppercase", "fields": ["x"]}], ["straße", "éa", "", None]) == ["STRASSE", "ÉA", "", None]


@pytest.mark.parametrize("name", ["orders.amount", "first name", "^a.*$", "a*", "(x)"])
def test_odd_column_names_are_taken_literally(name: str) -> None:
    batch = frame(**{name: [" A "], "ab": [" B "], "other": [" C "]})
    done = run([{"type": "trim", "fields": [name]}, {"type": "lowercase", "fields": [name]}], batch)
    assert done.frame.row(0) == (1, None, "a", " B ", " C ")


def test_hash_is_sha256_of_salt_and_value_in_utf8() -> None:
    hashed = column([{"type": "hash", "fields": ["x"], "salt": "pepper"}], ["ann@example.com", "Zoë", "", None])
    expected = [hashlib.sha256(f"pepper{v}".encode()).hexdigest() for v in ("ann@example.com", "Zoë")]
    assert hashed == [*expected, "", None]
    unsalted = column([{"type": "hash", "fields": ["x"]}], ["a"])
    assert unsalted == ["ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"]


# ── rows and columns ─────────────────────────────────────────────────────────────────

COUNTRIES = ["NL", "BE", "", None, "nl", "DE"]


@pytest.mark.parametrize(("where", "kept"), [
    ({"equals": "NL"}, ["NL"]),
    ({"in": ["NL", "BE"]}, ["NL", "BE"]),
    ({"not_in": ["NL", "BE"]}, ["", None, "nl", "DE"]),  # empty cells are kept: they are not in the list
    ({"not_in": ["DE", ""]}, ["NL", "BE", "nl"]),         # unless "" is listed
    ({"matches": "L"}, ["NL"]),                            # a search, like re.search
    ({"matches": "(?i)^nl$"}, ["NL", "nl"]),               # anchor for a whole-value match
    ({"matches": "^$"}, ["", None]),
    ({"exists": True}, ["NL", "BE", "nl", "DE"]),
    ({"exists": False}, ["", None]),
])
def test_filter_keeps_matching_rows_and_counts_the_rest(where: dict[str, Any], kept: list[str | None]) -> None:
    done = run([{"type": "filter", "where": {"field": "country", **where}}], frame(country=COUNTRIES))
    assert done.frame.get_column("country").to_list() == kept
    assert done.filtered == len(COUNTRIES) - len(kept)
    assert done.frame.get_column("_row").to_list() == [COUNTRIES.index(value) + 1 for value in kept]


def test_filters_add_up_and_accept_yaml_integers() -> None:
    batch = frame(country=["NL", "NL", "BE", "NL"], points=["10", "5", "10", "10"])
    done = run([{"type": "filter", "where": {"field": "country", "equals": "NL"}},
                {"type": "filter", "where": {"field": "points", "in": [10]}}], batch)
    assert done.frame.get_column("_row").to_list() == [1, 4]
    assert done.filtered == 2


def test_rename_keeps_the_column_order_and_may_swap() -> None:
    batch = frame(**{"orders.amount": ["1"], "b": ["2"], "c": ["3"]})
    done = run([{"type": "rename", "fields": {"orders.amount": "amount", "b": "c", "c": "b"}}], batch)
    assert done.frame.columns == ["_row", "_row@orders", "amount", "c", "b"]
    assert done.frame.row(0) == (1, None, "1", "2", "3")


def test_rename_onto_an_existing_column_is_an_input_error() -> None:
    with pytest.raises(errors.InputError, match=r"processor rename: cannot rename onto existing column\(s\) b"):
        run([{"type": "rename", "fields": {"a": "b"}}], frame(a=["1"], b=["2"]))


def test_drop_removes_fields_only() -> None:
    batch = frame(**{"a": ["1"], "first name": ["x"], "b": ["2"]})
    done = run([{"type": "drop", "fields": ["a", "first name"]}], batch)
    assert done.frame.columns == ["_row", "_row@orders", "b"]


# ── conversions with rejects ─────────────────────────────────────────────────────────


@pytest.mark.parametrize(("value", "iso"), [
    ("2024-02-29", "2024-02-29"),
    (" 2024-02-29 ", "2024-02-29"),
    ("2024-01-02T10:11", "2024-01-02T10:11:00"),
    ("2024-01-02T10:11:12", "2024-01-02T10:11:12"),
    ("2024-01-02 10:11:12", "2024-01-02T10:11:12"),
    ("2024-01-02T10:11:12.345", "2024-01-02T10:11:12"),
    ("2024-01-02T10:11:12Z", "2024-01-02T10:11:12Z"),
    ("2024-01-02T10:11:12.5+02:00", "2024-01-02T08:11:12Z"),
    ("2024-01-02T00:30-01:30", "2024-01-02T02:00:00Z"),
    ("2024-01-01T00:30:00+0100", "2023-12-31T23:30:00Z"),
    ("2024-01-02T10:11:12+02", "2024-01-02T08:11:12Z"),
    ("", ""),
    (None, None),
])
def test_parse_date_writes_iso_8601(value: str | None, iso: str | None) -> None:
    done = run([{"type": "parse_date", "fields": ["x"]}], frame(x=[value]))
    assert done.frame.get_column("x").to_list() == [iso]
    assert done.rejects == []


def test_parse_date_accepts_given_formats_besides_iso() -> None:
    configs = [{"type": "parse_date", "fields": ["x"], "format": "%d/%m/%Y",
                "formats": ["%d-%m-%Y %H:%M", "%d.%m.%Y %H:%M %z"]}]
    values = ["31/12/2024", "31-12-2024 23:59", "31.12.2024 23:59 +0100", "2024-12-31"]
    assert column(configs, values) == ["2024-12-31", "2024-12-31T23:59:00", "2024-12-31T22:59:00Z", "2024-12-31"]


def test_parse_date_rejects_what_it_cannot_read() -> None:
    values = ["2024-02-30", "31/12/2024", "2024-01-02T25:00", "1.1.24", "2024-1-2", "x" * 300, "   ", "2024-01-02"]
    done = run([{"type": "parse_date", "fields": ["x"]}], frame(x=values))
    assert done.frame.get_column("x").to_list() == [None] * 6 + ["   ", "2024-01-02"]
    reason = "`x` is not a date (expected ISO 8601)"
    assert done.rejects == [RowReject(LABEL, row, "x", reason, value[:200]) for row, value in enumerate(values[:6], 1)]


@pytest.mark.parametrize(("value", "phone"), [
    ("+31 6 1234 5678", "+31612345678"),
    ("0031-(0)6-12345678", "+31612345678"),
    ("+31 (0)20 123.45.67", "+31201234567"),
    ("(020) 123/4567", "+31201234567"),
    ("06\u00a012345678", "+31612345678"),
    ("+1 (555) 010-9999", "+15550109999"),
    ("", ""),
    (None, None),
])
def test_normalize_phone_cleans_numbers(value: str | None, phone: str | None) -> None:
    done = run([{"type": "normalize_phone", "fields": ["x"], "default_country_code": "+31"}], frame(x=[value]))
    assert done.frame.get_column("x").to_list() == [phone]
    assert done.rejects == []


def test_normalize_phone_without_country_code_keeps_the_leading_zero() -> None:
    assert column([{"type": "normalize_phone", "fields": ["x"]}], ["06-12345678"]) == ["0612345678"]


def test_normalize_phone_rejects_what_is_not_a_number() -> None:
    values = ["12345", "+1234567890123456", "call me", "06-1234x567", "٠٦١٢٣٤٥٦٧٨", "+31612345678"]
    done = run([{"type": "normalize_phone", "fields": ["tel"]}], frame(tel=values))
    assert done.frame.get_column("tel").to_list() == [None] * 5 + ["+31612345678"]
    reason = "`tel` is not a phone number (expected 6 to 15 digits, optionally after +)"
    assert done.rejects == [RowReject(LABEL, row, "tel", reason, value) for row, value in enumerate(values[:5], 1)]


def test_rejects_carry_the_record_number_after_a_filter() -> None:
    batch = frame(country=["DE", "NL", "NL"], born=["1990-01-01", "never", "1980-12-31"])
    done = run([{"type": "filter", "where": {"field": "country", "equals": "NL"}},
                {"type": "parse_date", "fields": ["born"]}], batch)
    assert [(reject.row, reject.value) for reject in done.rejects] == [(2, "never")]
    assert done.filtered == 1


# ── `_` columns and missing fields ───────────────────────────────────────────────────

EVERY_BUILTIN = [
    {"type": "normalize_email", "fields": ["mail"]},
    {"type": "trim"},
    {"type": "lowercase", "fields": ["mail"]},
    {"type": "uppercase", "fields": ["name"]},
    {"type": "filter", "where": {"field": "name", "exists": True}},
    {"type": "hash", "fields": ["mail"]},
    {"type": "parse_date", "fields": ["born"]},
    {"type": "normalize_phone", "fields": ["tel"]},
    {"type": "rename", "fields": {"name": "full name"}},
    {"type": "drop", "fields": ["tel"]},
]


def test_internal_columns_come_through_every_built_in_unchanged() -> None:
    batch = frame(mail=[" A@B.C ", "x@y"], name=["Ann", ""], born=["1990-01-01", "?"], tel=["0612345678", "1"])
    batch = batch.with_columns(pl.Series("_row@orders", [7, None]), _raw=pl.Series([" Raw ", None]))
    done = run(EVERY_BUILTIN, batch)
    assert done.frame.select("_row", "_row@orders", "_raw").to_dicts() == [
        {"_row": 1, "_row@orders": 7, "_raw": " Raw "}]
    assert done.frame.columns == ["_row", "_row@orders", "mail", "full name", "born", "_raw"]
    assert done.filtered == 1


@pytest.mark.parametrize("config", EVERY_BUILTIN[:1] + EVERY_BUILTIN[2:])
def test_a_field_missing_from_the_file_is_an_input_error(config: dict[str, Any]) -> None:
    with pytest.raises(errors.InputError) as caught:
        run([config], frame(a=["1"], b=["2"]))
    assert str(caught.value).startswith(f"file {LABEL}: processor {config['type']}: field(s) ")
    assert str(caught.value).endswith(" not in the file (columns: a, b)")


def test_missing_field_message_names_every_missing_field() -> None:
    with pytest.raises(errors.InputError, match=r"^file customers_1\.csv: processor normalize_email: "
                                                r"field\(s\) mail, email not in the file \(columns: a, b\)$"):
        run([{"type": "normalize_email", "fields": ["mail", "a", "email"]}], frame(a=["1"], b=["2"]))


def test_a_polars_failure_is_an_input_error_naming_the_step() -> None:
    batch = frame(a=["x"]).with_columns(n=pl.lit(3))
    with pytest.raises(errors.InputError, match=r"processor lowercase: "):
        run([{"type": "lowercase", "fields": ["n"]}], batch)


def plugin_step(processor: processors.Processor) -> processors.Step:
    """Given a plugin's callable, return it as a step the way `build` wraps an entry point's."""
    return processors.Step("plugin", 0, processors._plugin_apply(processor))


@pytest.mark.parametrize(("processor", "message"), [
    (lambda f: f.drop("_row@orders"), "dropped internal column(s) _row@orders"),
    (lambda f: f.with_columns(pl.col("_row") + 1), "changed internal column(s) _row, _row@orders"),
    (lambda f: f.with_columns(pl.col("_row").cast(pl.String)), "changed internal column(s) _row, _row@orders"),
    (lambda f: pl.concat([f, f]), "returned 4 rows for 2: processors may not add rows"),
    (lambda f: f.to_dicts(), "returned list, not a polars DataFrame"),
    (lambda f: 1 / 0, "failed: ZeroDivisionError: division by zero"),
])
def test_plugin_results_must_keep_internal_columns(processor: processors.Processor, message: str) -> None:
    with pytest.raises(errors.InputError) as caught:
        processors.run([plugin_step(processor)], frame(a=["x", "y"]), label=LABEL)
    assert str(caught.value) == f"file {LABEL}: processor plugin: {message}"


def test_plugin_may_remove_reorder_and_add_columns() -> None:
    step = plugin_step(lambda f: f.filter(pl.col("a") != "x").reverse().with_columns(b=pl.lit("new")))
    done = processors.run([step], frame(a=["x", "y", "z"]), label=LABEL)
    assert done.frame.get_column("_row").to_list() == [3, 2]
    assert done.filtered == 1


# ── configuration ────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("config", "problem"), [
    ({"type": "foo"}, "processors[0]: unknown type 'foo' (built in: drop, filter, hash, lowercase, normalize_email, "
                      "normalize_phone, parse_date, rename, trim, uppercase; plugins: none)"),
    ({"fields": ["a"]}, "processors[0]: needs `type` (the processor's name)"),
    ("trim", "processors[0]: needs `type` (the processor's name)"),
    ({"type": "trim", "feilds": ["a"]}, "processors[0] (trim): unknown option(s) feilds (allowed: fields)"),
    ({"type": "lowercase"}, "processors[0] (lowercase): missing option(s) fields"),
    ({"type": "lowercase", "fields": "a"}, "processors[0] (lowercase): fields must be a non-empty list of field names"),
    ({"type": "lowercase", "fields": []}, "processors[0] (lowercase): fields must be a non-empty list of field names"),
    ({"type": "lowercase", "fields": ["_row"]},
     "processors[0] (lowercase): fields: _row is an internal column (names starting with _ are the connector's)"),
    ({"type": "filter", "where": {"field": "a"}},
     "processors[0] (filter): where needs exactly one of equals, in, not_in, matches, exists"),
    ({"type": "filter", "where": {"field": "a", "equals": "x", "in": ["x"]}},
     "processors[0] (filter): where needs exactly one of equals, in, not_in, matches, exists"),
    ({"type": "filter", "where": {"field": "a", "like": "x"}}, "processors[0] (filter): where: unknown key(s) like"),
    ({"type": "filter", "where": {"equals": "x"}}, "processors[0] (filter): where.field must be a field name"),
    ({"type": "filter", "where": ["a"]},
     "processors[0] (filter): where must be a mapping like {field: country, in: [NL, BE]}"),
    ({"type": "filter", "where": {"field": "a", "equals": 1.5}},
     "processors[0] (filter): where.equals must be text (quote 1.5 in the YAML)"),
    ({"type": "filter", "where": {"field": "a", "in": "NL"}},
     "processors[0] (filter): where.in must be a non-empty list"),
    ({"type": "filter", "where": {"field": "a", "exists": "yes"}},
     "processors[0] (filter): where.exists must be true or false"),
    ({"type": "filter", "where": {"field": "a", "matches": "(unclosed"}},
     "processors[0] (filter): where.matches: invalid regular expression '(unclosed': unclosed group"),
    ({"type": "filter", "where": {"field": "a", "matches": "(?=lookahead)"}},
     "processors[0] (filter): where.matches: invalid regular expression '(?=lookahead)': look-around, "
     "including look-ahead and look-behind, is not supported"),
    ({"type": "rename", "fields": {"_row": "row"}},
     "processors[0] (rename): fields: _row is an internal column (names starting with _ are the connector's)"),
    ({"type": "rename", "fields": {"a": "_a"}},
     "processors[0] (rename): fields: _a is an internal column (names starting with _ are the connector's)"),
    ({"type": "rename", "fields": {"a": "c", "b": "c"}},
     "processors[0] (rename): fields renames two columns to the same name"),
    ({"type": "rename", "fields": ["a"]}, "processors[0] (rename): fields must be a mapping {old name: new name}"),
    ({"type": "drop", "fields": ["_row"]},
     "processors[0] (drop): fields: _row is an internal column (names starting with _ are the connector's)"),
    ({"type": "hash", "fields": ["a"], "salt": 42}, "processors[0] (hash): salt must be text"),
    ({"type": "parse_date", "fields": ["a"], "format": "dd/mm/yyyy"},
     "processors[0] (parse_date): format 'dd/mm/yyyy' must be a strftime format like %d/%m/%Y"),
    ({"type": "parse_date", "fields": ["a"], "format": "%Y-%m-%d %H"},
     "processors[0] (parse_date): format '%Y-%m-%d %H': Invalid format string"),
    ({"type": "parse_date", "fields": ["a"], "formats": "%d/%m/%Y"},
     "processors[0] (parse_date): formats must be a list of strftime formats"),
    ({"type": "normalize_phone", "fields": ["a"], "default_country_code": "31"},
     "processors[0] (normalize_phone): default_country_code must look like +31, not '31'"),
])
def test_bad_config_is_named_by_position_and_type(config: Any, problem: str) -> None:
    [reported] = config_error([config])
    assert reported.startswith(problem)


def test_every_bad_entry_is_reported_at_once() -> None:
    problems = config_error([{"type": "trim"}, {"type": "drop"}, {"type": "trim"}, {"type": "nope"}])
    assert [problem.split(":")[0] for problem in problems] == ["processors[1] (drop)", "processors[3]"]


def test_build_returns_steps_in_order() -> None:
    steps = processors.build([{"type": "trim"}, {"type": "filter", "where": {"field": "a", "exists": True}}])
    assert [(step.type, step.position) for step in steps] == [("trim", 0), ("filter", 1)]
    assert processors.build([]) == []
