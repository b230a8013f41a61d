"""Which indexes a serving surface shows: all of the store's, or the ones it was started with; the one rule and
the one message every surface (HTTP API, MCP, the page, uploads) uses for an index it does not show."""

from __future__ import annotations

from collections.abc import Sequence

from nvrag.errors import IndexNotFoundError
from nvrag.store.base import Store


def visible_indexes(store: Store, served: Sequence[str] | None) -> list[str]:
    """The store's indexes that a surface serving ``served`` (None: all) shows."""
    return [n for n in store.list_indexes() if served is None or n in served]


def check_visible(store: Store, served: Sequence[str] | None, name: str) -> None:
    """IndexNotFoundError, naming the indexes there are, unless ``name`` exists and is served."""
    if (served is not None and name not in served) or not store.exists(name):
        known = ", ".join(visible_indexes(store, served)) or "none yet"
        raise IndexNotFoundError(f"no index named {name!r} here (indexes: {known})")
