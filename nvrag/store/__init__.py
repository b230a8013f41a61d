"""Vectors + ids + metadata in named indexes: the Store interface and its backends.

LanceDB (the default), FAISS (``nvrag.store.faiss_store.FaissStore``, the `faiss` extra, imported on use) and
the NumPy reference store (``nvrag.store.numpy_store.NumpyStore``), which the conformance suite uses as oracle.
"""

from nvrag.store.base import ScoredChunk, Store, Table, check_index_name
from nvrag.store.lancedb_store import LanceStore

__all__ = ["LanceStore", "ScoredChunk", "Store", "Table", "check_index_name"]
