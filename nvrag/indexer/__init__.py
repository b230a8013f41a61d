"""Loaders (files → Document), chunking (Document → Chunk), indexing requests and the engines that run them."""

from nvrag.indexer.chunking import chunk_document, chunk_id
from nvrag.indexer.engine import Engine, Progress, ProgressFn, StopFlag, delete_documents, embedding_text
from nvrag.indexer.ledger import IndexReport
from nvrag.indexer.loaders import LoadFailure, load_corpus, load_jsonl
from nvrag.indexer.manage import StoredDocument, drop_index, list_documents
from nvrag.indexer.pipeline import Indexer
from nvrag.indexer.request import IndexRequest, ItemsSource, PathSource, RayOptions

__all__ = [
    "Engine",
    "IndexReport",
    "IndexRequest",
    "Indexer",
    "ItemsSource",
    "LoadFailure",
    "PathSource",
    "Progress",
    "ProgressFn",
    "RayOptions",
    "StopFlag",
    "StoredDocument",
    "chunk_document",
    "chunk_id",
    "delete_documents",
    "drop_index",
    "embedding_text",
    "list_documents",
    "load_corpus",
    "load_jsonl",
]
