"""The metadata filter syntax: ``field op value`` conditions joined by ``and``.

::

    lang = en                      text equality (quotes optional for one word: lang = 'en')
    year >= 2020                   numbers compare numerically (=, !=, <, <=, >, >=)
    kind in (function, class)      any of several values
    lang = en and year < 2021      every condition must hold
    title = 'Hash functions'       quoted text may hold spaces; '' escapes a quote inside single quotes

``doc_id``, ``source``, ``title`` and ``chunk_no`` are the chunk's own fields; any other name is a metadata key
(top level). A bare number is a number; a quoted one ('2020') is text. A condition on a key a chunk does not
have is false, and a numeric condition is false for a value that is not a number; a search that finds nothing
because no chunk of the index has a filtered key says so, listing the keys there are (``Retriever``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from nvrag.errors import FilterError
from nvrag.schema import FilterCondition

_FIELD = r"[A-Za-z_][A-Za-z0-9_\-]*"
_VALUE = r"'(?:[^']|'')*'|\"[^\"]*\"|[^\s,()'\"=<>!]+"
_CONDITION = re.compile(
    rf"^\s*(?P<field>{_FIELD})\s*(?:(?P<op>!=|<=|>=|=|<|>)\s*(?P<value>{_VALUE})"
    rf"|\s+in\s*\((?P<values>[^)]*)\))\s*$",
    re.IGNORECASE,
)
_SPLIT_AND = re.compile(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _value(token: str) -> str | float:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        inner = token[1:-1]
        return inner.replace("''", "'") if token[0] == "'" else inner
    if _NUMBER.match(token):
        return float(token)
    return token


_OR = re.compile(r"\s+or\s+(?=(?:[^']*'[^']*')*[^']*$)", re.IGNORECASE)


def parse_condition(text: str) -> FilterCondition:
    match = _CONDITION.match(text)
    if match is None and _OR.search(text):
        raise FilterError(
            f"filter {text.strip()!r}: `or` is not supported; conditions join with `and`, and alternatives of one "
            "field are `field in (a, b)`"
        )
    if match is None:
        raise FilterError(
            f"cannot read the filter condition {text.strip()!r}: write `field = value`, `field >= 3` or "
            "`field in (a, b)`, joined by `and`"
        )
    field = match["field"]
    if match["op"] is not None:
        return FilterCondition(field, match["op"], _value(match["value"]))
    items = [v for v in re.findall(_VALUE, match["values"] or "")]
    if not items:
        raise FilterError(f"filter {text.strip()!r}: `in` needs at least one value, e.g. {field} in (a, b)")
    values = tuple(_value(v) for v in items)
    if len({isinstance(v, str) for v in values}) > 1:
        raise FilterError(f"filter {text.strip()!r}: mix of numbers and text; quote the numbers meant as text")
    return FilterCondition(field, "in", values)


def parse_filters(texts: Iterable[str]) -> tuple[FilterCondition, ...]:
    """Parse filter expressions (each may join conditions with ``and``); all conditions must hold."""
    conditions: list[FilterCondition] = []
    for text in texts:
        if not text.strip():
            continue
        conditions.extend(parse_condition(part) for part in _SPLIT_AND.split(text))
    return tuple(conditions)
