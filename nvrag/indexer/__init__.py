"""Loaders (files → Document), chunking (Document → Chunk) and the incremental indexing pipeline."""

from nvrag.indexer.chunking import chunk_document, chunk_id
from nvrag.indexer.loaders import LoadFailure, load_corpus, load_jsonl
from nvrag.indexer.pipeline import (
    Indexer,
    IndexReport,
    Progress,
    StopFlag,
    embedding_text,
)

__all__ = [
    "IndexReport",
    "Indexer",
    "LoadFailure",
    "Progress",
    "StopFlag",
    "chunk_document",
    "chunk_id",
    "embedding_text",
    "load_corpus",
    "load_jsonl",
]
