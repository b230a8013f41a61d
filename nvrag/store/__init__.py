"""Vectors + ids + metadata in named indexes: the Store interface and its backends.

LanceDB (the default, ``LanceStore``), FAISS (``nvrag.store.faiss_store.FaissStore``, the `faiss` extra) and
the NumPy reference store (``nvrag.store.numpy_store.NumpyStore``), which the conformance suite uses as oracle.
Each backend is imported when it is first used (``nvrag.store.LanceStore`` imports pylance then; lancedb only
when a vector index is built or an object store's tables are listed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nvrag.store.base import ScoredChunk, Store, Table, check_index_name
from nvrag.store.failures import storage_errors

if TYPE_CHECKING:
    from nvrag.store.lancedb_store import LanceStore


def __getattr__(name: str) -> Any:
    if name == "LanceStore":
        from nvrag.store.lancedb_store import LanceStore

        return LanceStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LanceStore", "ScoredChunk", "Store", "Table", "check_index_name", "storage_errors"]
