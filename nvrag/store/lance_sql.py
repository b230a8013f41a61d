"""Metadata filters as Lance (DataFusion SQL) predicates, with every value quoted as a literal and every column
name in backticks (Lance reads a double-quoted name as a string)."""

from __future__ import annotations

from collections.abc import Sequence

from nvrag.errors import FilterError
from nvrag.schema import FilterCondition
from nvrag.store.base import COLUMN_FIELDS


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def literal(value: str | float) -> str:
    return quote(value) if isinstance(value, str) else repr(float(value))


def where_sql(conditions: Sequence[FilterCondition]) -> str | None:
    """A LanceDB (DataFusion SQL) predicate for conditions, ANDed. Metadata keys are read from the JSONB
    column; a number compares numerically (a value that is not a number never matches), a string exactly.
    A condition on a missing key is false."""
    parts: list[str] = []
    for c in conditions:
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        numeric = all(not isinstance(v, str) for v in values)
        if c.field in COLUMN_FIELDS:
            if numeric != (COLUMN_FIELDS[c.field] == "int"):
                kind = "a number" if COLUMN_FIELDS[c.field] == "int" else "text (quote numbers: 'x')"
                raise FilterError(f"filter on {c.field!r}: its values are {kind}")
            target = f"CAST(`{c.field}` AS DOUBLE)" if numeric else f"`{c.field}`"
        else:
            target = f"json_get_string(metadata, {quote(c.field)})"
            if numeric:
                target = f"TRY_CAST({target} AS DOUBLE)"
        if c.op == "in":
            parts.append(f"{target} IN ({', '.join(literal(v) for v in values)})")
        else:
            parts.append(f"{target} {'<>' if c.op == '!=' else c.op} {literal(values[0])}")
    return " AND ".join(parts) or None
