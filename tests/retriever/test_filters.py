from __future__ import annotations

import pytest

from nvrag.errors import FilterError
from nvrag.retriever import parse_filters
from nvrag.schema import FilterCondition as C


def test_the_documented_forms() -> None:
    assert parse_filters(["lang = en", "year >= 2020 and year < 2022.5", "kind in (function, 'class')"]) == (
        C("lang", "=", "en"),
        C("year", ">=", 2020.0),
        C("year", "<", 2022.5),
        C("kind", "in", ("function", "class")),
    )


def test_quoting_numbers_and_case() -> None:
    assert parse_filters(["title = 'it''s AND more' AND n != -3e2", 'x="2020"', "y IN (1, 2)"]) == (
        C("title", "=", "it's AND more"),
        C("n", "!=", -300.0),
        C("x", "=", "2020"),
        C("y", "in", (1.0, 2.0)),
    )


def test_blank_filters_are_no_filter() -> None:
    assert parse_filters(["", "  "]) == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lang", "cannot read the filter condition 'lang'"),
        ("lang == en", "cannot read the filter condition"),
        ("1abc = x", "cannot read the filter condition"),
        ("kind in ()", "`in` needs at least one value"),
        ("n in (1, a)", "mix of numbers and text"),
        ("lang = en and", "cannot read the filter condition"),
        ("lang = en or lang = de", "`or` is not supported; .* `field in \\(a, b\\)`"),
    ],
)
def test_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filters([text])
