"""Vectors + ids + metadata in named indexes: the Store interface and its LanceDB backend."""

from nvrag.store.base import ScoredChunk, Store, Table, check_index_name
from nvrag.store.lancedb_store import LanceStore

__all__ = ["LanceStore", "ScoredChunk", "Store", "Table", "check_index_name"]
