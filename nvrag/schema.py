"""The small value types every layer shares: Document, Chunk, Hit, ChunkerSettings, IndexManifest.

Frozen dataclasses over the standard library only, so any layer may import them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

JSONValue = Any  # a value json.dumps accepts; metadata values are kept to that


@dataclass(frozen=True)
class Document:
    """One document as a loader produced it."""

    doc_id: str
    text: str
    source: str  # a path or URI, shown to users and linked from the UI
    title: str | None = None
    metadata: dict[str, JSONValue] = field(default_factory=dict)
    page_starts: tuple[int, ...] = ()  # PDFs: character offset where each page (1, 2, ...) begins in text


@dataclass(frozen=True)
class Chunk:
    """A piece of a document that is embedded as one vector.

    ``start``/``end`` are character offsets into ``Document.text``; ``text == document.text[start:end]``.
    """

    chunk_id: str
    doc_id: str
    source: str
    chunk_no: int
    text: str
    start: int
    end: int
    title: str | None = None
    metadata: dict[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result: a chunk, its rank and its score.

    ``score`` is the cosine similarity in dense mode, the BM25 score in bm25 mode and the reciprocal-rank-fusion
    score in hybrid mode; the ``dense_*`` and ``bm25_*`` fields keep each retriever's own rank and score (None
    where that retriever did not return the chunk).
    """

    rank: int
    score: float
    chunk_id: str
    doc_id: str
    source: str
    chunk_no: int
    text: str
    start: int
    end: int
    title: str | None = None
    metadata: dict[str, JSONValue] = field(default_factory=dict)
    page: int | None = None
    dense_rank: int | None = None
    dense_score: float | None = None
    bm25_rank: int | None = None
    bm25_score: float | None = None

    def to_dict(self) -> dict[str, JSONValue]:
        return asdict(self)


@dataclass(frozen=True)
class ChunkerSettings:
    """How documents are cut into chunks. Part of a chunk's identity (see ``fingerprint``).

    ``mode`` "tokens" cuts token windows; "document" keeps each document whole as one chunk (the model truncates
    it), the MTEB protocol ``nvrag eval`` follows. ``title_separator`` joins a title and a chunk's text for
    embedding.
    """

    chunk_tokens: int = 200  # leaves room for a title within all-MiniLM-L6-v2's 254 text tokens
    overlap_tokens: int = 32
    mode: str = "tokens"
    title_separator: str = "\n"

    def fingerprint(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


FILTER_OPS = ("=", "!=", "<", "<=", ">", ">=", "in")


@dataclass(frozen=True)
class FilterCondition:
    """One metadata condition: ``field op value``; ``value`` is a tuple for "in". Conditions are ANDed."""

    field: str
    op: str
    value: str | float | tuple[str | float, ...]


MANIFEST_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class IndexManifest:
    """What an index was built with. Stored with the index; search and appends must match it."""

    name: str
    model: str
    model_revision: str
    dimension: int
    normalized: bool
    query_template: str
    document_template: str
    license: str
    chunker: ChunkerSettings
    nvrag_version: str
    created_at: str  # ISO 8601, UTC
    updated_at: str
    schema_version: int = MANIFEST_SCHEMA_VERSION
    table: str = ""  # the physical table holding the rows; "" means the index's own name
    vector_dtype: str = "float32"  # how vectors are stored: float32, or float16 (half the memory)
    quantization: str = "none"  # "binary": a sign-bit copy of each vector is searched, the full vectors rescore

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, payload: str) -> IndexManifest:
        data = json.loads(payload)
        data["chunker"] = ChunkerSettings(**data["chunker"])
        return cls(**data)

    def to_dict(self) -> dict[str, JSONValue]:
        return asdict(self)
