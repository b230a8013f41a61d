"""The small value types every layer shares: Document, Chunk, Hit, ChunkerSettings, IndexManifest.

Frozen dataclasses over the standard library only, so any layer may import them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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

    def to_row(self) -> dict[str, Any]:
        """The chunk as a stored row: every field under its own name, metadata as a JSON object string."""
        row = {f.name: getattr(self, f.name) for f in fields(Chunk)}
        row["metadata"] = json.dumps(self.metadata, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Chunk:
        """A chunk from a stored row (``to_row``'s form; extra keys such as scores or vectors are ignored)."""
        metadata = row["metadata"]
        return cls(
            chunk_id=row["chunk_id"],
            doc_id=row["doc_id"],
            source=row["source"],
            chunk_no=int(row["chunk_no"]),
            text=row["text"],
            start=int(row["start"]),
            end=int(row["end"]),
            title=row["title"],
            metadata=json.loads(metadata or "{}") if isinstance(metadata, str | None) else dict(metadata),
        )


CHUNK_COLUMNS = ("chunk_id", "doc_id", "source", "chunk_no", "title", "text", "start", "end", "metadata")


def passage_text(chunk: Chunk, separator: str = "\n") -> str:
    """A chunk as a passage: its document's title (when there is one), the separator, then its text. What the
    indexer embeds and a reranker scores (the separator is the index's ``ChunkerSettings.title_separator``)."""
    return f"{chunk.title}{separator}{chunk.text}" if chunk.title else chunk.text


@dataclass(frozen=True)
class Hit(Chunk):
    """One search result: a stored chunk (every Chunk field) with its rank and scores. Built with ``Hit.of``.

    ``score`` is the cosine similarity in dense mode, the BM25 score in bm25 mode and the reciprocal-rank-fusion
    score in hybrid mode; the ``dense_*`` and ``bm25_*`` fields keep each retriever's own rank and score (None
    where that retriever did not return the chunk). ``page`` is the PDF page the chunk starts on, when known.
    """

    rank: int = 0
    score: float = 0.0
    page: int | None = None
    dense_rank: int | None = None
    dense_score: float | None = None
    bm25_rank: int | None = None
    bm25_score: float | None = None
    retrieval_rank: int | None = None  # reranked searches: the rank the first stage gave it (``rank`` is the final)
    rerank_score: float | None = None  # reranked searches: the reranker's score (``score`` stays the retrieval's)

    @classmethod
    def of(
        cls,
        chunk: Chunk,
        rank: int,
        score: float,
        dense: tuple[int, float] | None = None,
        bm25: tuple[int, float] | None = None,
    ) -> Hit:
        page = chunk.metadata.get("page")
        return cls(
            **{f.name: getattr(chunk, f.name) for f in fields(Chunk)},
            rank=rank,
            score=score,
            page=page if isinstance(page, int) else None,
            dense_rank=dense[0] if dense else None,
            dense_score=dense[1] if dense else None,
            bm25_rank=bm25[0] if bm25 else None,
            bm25_score=bm25[1] if bm25 else None,
        )

    @property
    def chunk(self) -> Chunk:
        return Chunk(**{f.name: getattr(self, f.name) for f in fields(Chunk)})

    def to_dict(self) -> dict[str, JSONValue]:
        """The JSON form (`nvrag search --json`, the HTTP API): every field, the score rounded to 6 places
        (float32 noise)."""
        return {**asdict(self), "score": round(self.score, 6)}


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


# 1: the first manifests (``table`` "" meant the index's own name; storage fields added later with defaults).
# 2: ``table`` always names the physical table; every field is written. nvrag.store.manifests migrates.
# 3: ``compute_dtype``, what the model computed the vectors in (bfloat16 became a CPU default).
# 4: ``model_path``. 5: ``ann_nprobes`` and ``ann_recall``, the search setting a recall probe chose at build time.
# 6: ``ann_refine``, the candidates per hit that probe chose to re-rank with the full vectors.
MANIFEST_SCHEMA_VERSION = 6


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
    table: str = ""  # the physical table holding the rows; left empty, the index's own name
    vector_dtype: str = "float32"  # how vectors are stored: float32, or float16 (half the memory)
    quantization: str = "none"  # "binary": a sign-bit copy of each vector is searched, the full vectors rescore
    compute_dtype: str = "float32"  # what the model computed in when the index was built: float32 or bfloat16
    model_path: str = ""  # the folder the weights were loaded from ("" for bundled models); reused while it
    # still holds the weights of model_revision
    ann_nprobes: int = 0  # partitions an ANN search probes, chosen by the build's recall probe (0: the default rule)
    ann_recall: float | None = None  # the recall@10 that probe measured at ann_nprobes (None: no ANN index probed)
    ann_refine: int = 0  # candidates per hit re-ranked with the full vectors, chosen by that probe (0: the default)

    def __post_init__(self) -> None:
        if not self.table:
            object.__setattr__(self, "table", self.name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexManifest:
        """A manifest of the current schema version from its dict form (older ones: nvrag.store.manifests)."""
        return cls(**{**data, "chunker": ChunkerSettings(**data["chunker"])})

    def to_dict(self) -> dict[str, JSONValue]:
        return asdict(self)
