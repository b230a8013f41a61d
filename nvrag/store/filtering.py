"""Metadata filters evaluated in Python: the reference semantics of the filter syntax.

LanceDB evaluates filters in SQL (``lancedb_store.where_sql``); the FAISS and NumPy stores evaluate them here.
The conformance suite checks that both give the same results. The rules: conditions are ANDed; a missing key
is false (also for ``!=``); a number condition compares numerically and is false for a value that is not a
number or a numeric string; a text condition compares the value's text (numbers as written in JSON, booleans
as ``true``/``false``); lists and objects never match.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

from nvrag.errors import FilterError
from nvrag.schema import Chunk, FilterCondition
from nvrag.store.base import COLUMN_FIELDS

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def check_types(conditions: Sequence[FilterCondition]) -> None:
    """The same type errors LanceDB's SQL gives: text compared with chunk_no, numbers with text columns."""
    for c in conditions:
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        numeric = all(not isinstance(v, str) for v in values)
        if c.field in COLUMN_FIELDS and numeric != (COLUMN_FIELDS[c.field] == "int"):
            kind = "a number" if COLUMN_FIELDS[c.field] == "int" else "text (quote numbers: 'x')"
            raise FilterError(f"filter on {c.field!r}: its values are {kind}")


def matches(chunk: Chunk, conditions: Sequence[FilterCondition]) -> bool:
    for c in conditions:
        if c.field in COLUMN_FIELDS:
            raw: Any = getattr(chunk, c.field)
        elif c.field in chunk.metadata:
            raw = chunk.metadata[c.field]
        else:
            return False
        if raw is None:
            return False
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        numeric = all(not isinstance(v, str) for v in values)
        actual = _as_number(raw) if numeric else _as_text(raw)
        if actual is None:
            return False
        if c.op == "in":
            if actual not in values:
                return False
        elif not _OPS[c.op](actual, values[0]):
            return False
    return True
