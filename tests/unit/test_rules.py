"""The merge rules, cell by cell against the SPEC's table, plus properties that must always hold."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftp_connector import rules

# (rule, current, cell values, expected) — one line per cell of the SPEC's table, with and
# without a current value.
TABLE = [
    ("set", ["old"], ["new"], ["new"]),
    ("set", [], ["new"], ["new"]),
    ("set", ["old"], [], ["old"]),
    ("set", [], [], []),
    ("set_if_empty", ["old"], ["new"], ["old"]),
    ("set_if_empty", [], ["new"], ["new"]),
    ("set_if_empty", ["old"], [], ["old"]),
    ("set_or_clear", ["old"], ["new"], ["new"]),
    ("set_or_clear", ["old"], [], []),
    ("set_or_clear", [], [], []),
    ("add", ["a"], ["b"], ["a", "b"]),
    ("add", ["a", "b"], ["b", "c"], ["a", "b", "c"]),
    ("add", ["a"], [], ["a"]),
    ("add", [], ["a", "a"], ["a"]),
    ("sum", [10], [5], [15]),
    ("sum", [], [5], [5]),
    ("sum", [10], [], [10]),
    ("sum", [1.5], [Decimal("0.25")], [1.75]),
    ("sum", ["7"], [3], [10]),
]


@pytest.mark.parametrize(("rule", "current", "values", "expected"), TABLE)
def test_spec_table(rule: str, current: list, values: list, expected: list) -> None:
    assert rules.RULES[rule](current, values) == expected  # type: ignore[index]


def test_sum_of_a_non_numeric_current_value_is_refused() -> None:
    with pytest.raises(ValueError):
        rules.sum_(["abc"], [1])


@pytest.mark.parametrize("cell", ["abc", "1,5", "", "nan", "inf", "1e"])
def test_parse_amount_refuses_what_is_not_one_finite_number(cell: str) -> None:
    with pytest.raises(ValueError):
        rules.parse_amount(cell)


def test_decimal_sums_do_not_drift() -> None:
    total: list = []
    for _ in range(10):
        total = rules.sum_(total, [rules.parse_amount("0.1")])
    assert total == [1]


def test_a_value_repeated_in_a_cell_is_kept_once_in_order() -> None:
    # set then add would otherwise disagree on whether the stored repeat survives
    assert rules.split("x|y|x|y|z", "|") == ["x", "y", "z"]
    got = rules.with_split(pl.DataFrame({"c": ["x|y|x|y|z", "b||b", "a"]}), {"v": "c"}, "|").get_column("v")
    assert got.to_list() == [["x", "y", "z"], ["b"], ["a"]]


def test_split_drops_empty_parts_and_keeps_spaces() -> None:
    assert rules.split("a||b| c", "|") == ["a", "b", " c"]
    assert rules.split("", "|") == []
    assert rules.split(None, "|") == []
    assert rules.split("a|b", None) == ["a|b"]


values = st.lists(st.text(max_size=5), max_size=5)


@given(values, values)
def test_add_is_idempotent_and_never_duplicates(current: list, new: list) -> None:
    current = list(dict.fromkeys(current))
    once = rules.add(current, new)
    assert rules.add(once, new) == once
    assert len(once) == len(set(once))
    assert once[: len(current)] == current


@given(values, values)
def test_set_rules_are_idempotent(current: list, new: list) -> None:
    for name in ("set", "set_if_empty", "set_or_clear"):
        rule = rules.RULES[name]  # type: ignore[index]
        assert rule(rule(current, new), new) == rule(current, new)


@given(st.lists(st.integers(-10**6, 10**6), max_size=20))
def test_sum_adds_up_in_any_order(amounts: list[int]) -> None:
    forward: list = []
    for amount in amounts:
        forward = rules.sum_(forward, [amount])
    backward: list = []
    for amount in reversed(amounts):
        backward = rules.sum_(backward, [amount])
    assert forward == backward == ([sum(amounts)] if amounts else [])


# ── the column-wise rules agree with the pure functions ─────────────────────────────

import orjson  # noqa: E402
import polars as pl  # noqa: E402

texts = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True)  # stored values never repeat


def as_text(values: list) -> str | None:
    return orjson.dumps(values).decode() if values else None


@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=20))
def test_column_rules_agree_with_the_pure_rules(rows: list[tuple[list[str], list[str]]]) -> None:
    frame = pl.DataFrame({"current": [as_text(r[0]) for r in rows], "values": [r[1] for r in rows]},
                         schema={"current": pl.String, "values": pl.List(pl.String)})
    for name in ("set", "set_if_empty", "set_or_clear", "add"):
        got = frame.select(rules.expression(name, pl.col("current"), pl.col("values"))).to_series().to_list()
        assert got == [as_text(rules.RULES[name](c, v)) for c, v in rows], name  # type: ignore[index]


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-1000, 1000)),
                          st.one_of(st.none(), st.decimals("-1000", "1000", places=2))), min_size=1, max_size=20))
def test_column_sum_agrees_with_the_pure_sum(rows: list) -> None:
    current = [f"[{c}]" if c is not None else None for c, _ in rows]
    amounts = [float(a) if a is not None else None for _, a in rows]
    frame = pl.DataFrame({"current": current, "amount": amounts}, schema={"current": pl.String, "amount": pl.Float64})
    got = frame.select(rules.expression("sum", pl.col("current"), pl.col("amount"))).to_series().to_list()
    expected = [rules.sum_([c] if c is not None else [], [a] if a is not None else []) for c, a in rows]
    assert [orjson.loads(g) if g else [] for g in got] == [[float(x) for x in e] for e in expected]
    assert all("." not in g for g, e in zip(got, expected, strict=True) if e and isinstance(e[0], int))


@pytest.mark.parametrize(("cell", "separator", "expected"), [
    ("a||b| c", "|", ["a", "b", " c"]), ("", "|", []), (None, "|", []), ("a|b", None, ["a|b"]),
])
def test_column_split_matches_split(cell: str | None, separator: str | None, expected: list[str]) -> None:
    got = rules.with_split(pl.DataFrame({"c": [cell]}, schema={"c": pl.String}), {"v": "c"}, separator) \
        .get_column("v").item().to_list()
    assert got == expected == rules.split(cell, separator)


@given(st.lists(st.one_of(st.none(), st.text(alphabet="ab|; .*", max_size=12)), min_size=1, max_size=30),
       st.sampled_from([None, "|", ";", "ab", "aa", ".", "*|"]))
def test_column_split_agrees_with_the_pure_split(cells: list[str | None], separator: str | None) -> None:
    got = rules.with_split(pl.DataFrame({"c": cells}, schema={"c": pl.String}), {"v": "c"}, separator) \
        .get_column("v").to_list()
    assert got == [rules.split(cell, separator) for cell in cells]


def test_number_text_prints_whole_sums_as_integers_and_rounds_float_noise() -> None:
    got = pl.DataFrame({"x": [10.0, 0.1 + 0.2, -2.5, 1e20]}).select(rules.number_text(pl.col("x"))).to_series()
    assert got.to_list() == ["10", "0.3", "-2.5", "1e+20"]  # valid JSON numbers
