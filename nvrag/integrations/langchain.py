"""LangChain adapters over nvrag's own types (the `langchain` extra).

- ``NVRagEmbeddings``: ``embed_documents`` uses the document path, ``embed_query`` the query path with the
  configured task or instruction (never ``embed_documents([text])``, which would drop NV-Embed's instruction).
- ``NVRagRetriever``: Documents from an nvrag index (dense, bm25 or hybrid, filters, optionally reranked),
  with source, doc id, chunk span and score (and the rerank score and retrieval rank) in their metadata.
- ``NVRagVectorStore``: a LangChain VectorStore over an nvrag index; texts are embedded with the index's model.
- ``NVRagReranker``: a document compressor (``ContextualCompressionRetriever``'s ``base_compressor``) that
  reorders documents by an nvrag reranker's scores, keeping the ``top_n``, each with its ``relevance_score``.

LangChain types stay in this module; everything else speaks nvrag's types.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun, Callbacks
from langchain_core.documents import Document
from langchain_core.documents.compressor import BaseDocumentCompressor
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, PrivateAttr

from nvrag.embedder import Embedder, LoadOptions, load_embedder, resolve_instruction
from nvrag.embedder.pinning import check_manifest_model, new_manifest
from nvrag.errors import ConfigError
from nvrag.indexer.chunking import whole_documents
from nvrag.reranker import Reranker, load_reranker, ranked
from nvrag.retriever import DEFAULT_RERANK_DEPTH, Mode, Retriever, open_retriever, parse_filters
from nvrag.schema import Chunk, Hit
from nvrag.store import LanceStore, Table

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class NVRagEmbeddings(Embeddings):
    """nvrag's embedders as LangChain Embeddings: plain lists of floats, L2-normalised."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        model_path: str | Path | None = None,
        device: str = "cpu",
        task: str | None = None,
        instruction: str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.model = model
        self.instruction = resolve_instruction(task, instruction)
        self._options = LoadOptions(device=device, model_path=Path(model_path) if model_path else None)
        self._embedder = embedder

    @classmethod
    def from_embedder(
        cls, embedder: Embedder, *, task: str | None = None, instruction: str | None = None
    ) -> NVRagEmbeddings:
        return cls(embedder.name, task=task, instruction=instruction, embedder=embedder)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.model, self._options)
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.embedder.embed_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        (row,) = self.embedder.embed_queries([text], instruction=self.instruction)
        return [float(x) for x in row]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


def _hit_document(hit: Hit) -> Document:
    metadata = {
        **hit.metadata,
        "source": hit.source,
        "doc_id": hit.doc_id,
        "chunk_id": hit.chunk_id,
        "chunk_no": hit.chunk_no,
        "start": hit.start,
        "end": hit.end,
        "score": hit.score,
    }
    if hit.title is not None:
        metadata["title"] = hit.title
    if hit.page is not None:
        metadata["page"] = hit.page
    if hit.rerank_score is not None:
        metadata["rerank_score"] = hit.rerank_score
        metadata["retrieval_rank"] = hit.retrieval_rank
    return Document(page_content=hit.text, metadata=metadata, id=hit.chunk_id)


class NVRagRetriever(BaseRetriever):
    """Retrieve chunks of an nvrag index as LangChain Documents.

    Build it from a data directory and index name (``NVRagRetriever(db=..., index=...)``) or from an existing
    ``nvrag.retriever.Retriever`` (``NVRagRetriever.from_retriever(r)``). ``k``, ``mode`` and ``filters`` can
    also be given per call: ``retriever.invoke("query", k=3, filters=["lang = en"])``. ``rerank`` (a reranker's
    checkpoint folder or known hub id, or ``from_retriever(r, reranker=...)``) reorders the first
    ``rerank_depth`` candidates by its scores.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    db: str = ""
    index: str = "default"
    k: int = 4
    mode: Mode = "dense"
    filters: list[str] = Field(default_factory=list)
    task: str | None = None
    instruction: str | None = None
    min_score: float | None = None
    model_path: str | None = None
    device: str = "cpu"
    rerank: str | None = None
    rerank_depth: int = DEFAULT_RERANK_DEPTH
    rerank_instruction: str | None = None
    _retriever: Retriever | None = PrivateAttr(default=None)
    _reranker: Reranker | None = PrivateAttr(default=None)

    @classmethod
    def from_retriever(cls, retriever: Retriever, *, reranker: Reranker | None = None, **kwargs: Any) -> NVRagRetriever:
        made = cls(**kwargs)
        made._retriever = retriever
        made._reranker = reranker
        return made

    @property
    def nvrag_reranker(self) -> Reranker | None:
        if self._reranker is None and self.rerank:
            self._reranker = load_reranker(self.rerank, device=self.device)
        return self._reranker

    @property
    def nvrag_retriever(self) -> Retriever:
        if self._retriever is None:
            if not self.db:
                raise ConfigError("NVRagRetriever needs db= (the LanceDB data directory) or from_retriever(...)")
            model_path = Path(self.model_path) if self.model_path else None
            options = LoadOptions(device=self.device, model_path=model_path, for_queries=True)
            self._retriever = open_retriever(LanceStore(self.db), self.index, options)
        return self._retriever

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = self.nvrag_retriever.search(
            query,
            int(kwargs.get("k", self.k)),
            instruction=resolve_instruction(kwargs.get("task", self.task), kwargs.get("instruction", self.instruction)),
            mode=kwargs.get("mode", self.mode),
            filters=parse_filters(kwargs.get("filters", self.filters)),
            min_score=kwargs.get("min_score", self.min_score),
            reranker=self.nvrag_reranker,
            rerank_depth=max(int(kwargs.get("rerank_depth", self.rerank_depth)), int(kwargs.get("k", self.k))),
            rerank_instruction=kwargs.get("rerank_instruction", self.rerank_instruction),
        )
        return [_hit_document(h) for h in hits]


class NVRagReranker(BaseDocumentCompressor):
    """Rerank LangChain Documents with an nvrag reranker (a cross-encoder or an LLM reranker, exact): the
    ``top_n`` best by its score of ``page_content``, best first, each with ``relevance_score`` in its metadata.

    ``NVRagReranker(model="DIR_OR_HUB_ID", top_n=3)``, or ``NVRagReranker.from_reranker(r)``; use it as a
    ``ContextualCompressionRetriever``'s ``base_compressor``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = ""
    top_n: int | None = 3
    instruction: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    _reranker: Reranker | None = PrivateAttr(default=None)

    @classmethod
    def from_reranker(cls, reranker: Reranker, **kwargs: Any) -> NVRagReranker:
        made = cls(model=reranker.name, **kwargs)
        made._reranker = reranker
        return made

    @property
    def reranker(self) -> Reranker:
        if self._reranker is None:
            if not self.model:
                raise ConfigError("NVRagReranker needs model= (a reranker folder or hub id) or from_reranker(...)")
            self._reranker = load_reranker(self.model, device=self.device, dtype=self.dtype)
        return self._reranker

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        scores = self.reranker.score(query, [d.page_content for d in documents], self.instruction)
        return [
            Document(
                page_content=documents[r.index].page_content,
                metadata={**documents[r.index].metadata, "relevance_score": r.relevance_score},
                id=documents[r.index].id,
            )
            for r in ranked(scores, self.top_n)
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)


class NVRagVectorStore(VectorStore):
    """A LangChain VectorStore over one nvrag index (LanceDB). Each text is one chunk; its id is the chunk id.

    The index pins its model: a new index takes the embeddings' model; an existing one refuses any other.
    """

    def __init__(self, embedding: NVRagEmbeddings, *, db: str | Path, index: str = "langchain") -> None:
        if not isinstance(embedding, NVRagEmbeddings):
            raise TypeError(
                "NVRagVectorStore embeds with nvrag's own models (the index pins its model): pass NVRagEmbeddings"
            )
        self._embedding = embedding
        self._store = LanceStore(str(db))
        self.index = index
        embedder = embedding.embedder
        if self._store.exists(index):
            self._table: Table = self._store.open(index)
            check_manifest_model(self._table.manifest, embedder)
        else:
            self._table = self._store.create(new_manifest(index, embedder, whole_documents()))
        self._retriever = Retriever(self._table, embedder)

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        texts = list(texts)
        if ids is None:
            ids = [str(uuid.uuid4()) for _ in texts]
        ids = [i if i is not None else str(uuid.uuid4()) for i in ids]
        metadatas = metadatas or [{} for _ in texts]
        if not len(texts) == len(ids) == len(metadatas):
            raise ValueError(f"{len(texts)} texts, {len(ids)} ids and {len(metadatas)} metadatas: they must match")
        chunks = [
            Chunk(
                chunk_id=chunk_id,
                doc_id=chunk_id,
                source=str(meta.get("source", "")),
                chunk_no=0,
                text=text,
                start=0,
                end=len(text),
                metadata=dict(meta),
            )
            for text, chunk_id, meta in zip(texts, ids, metadatas, strict=True)
        ]
        if chunks:
            vectors = self._embedding.embedder.embed_documents(texts)
            with self._store.writing(self.index):  # one writer per index (IndexBusyError while another writes)
                self._table.upsert(chunks, vectors)
        return ids

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None) or [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents], [dict(d.metadata) for d in documents], ids=list(ids), **kwargs
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if ids:
            with self._store.writing(self.index):
                self._table.delete(ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [
            Document(page_content=c.text, metadata=dict(c.metadata), id=c.chunk_id) for c in self._table.get(list(ids))
        ]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filters: Sequence[str] = (), **kwargs: Any
    ) -> list[tuple[Document, float]]:
        hits = self._retriever.search(query, k, instruction=self._embedding.instruction, filters=parse_filters(filters))
        return [(Document(page_content=h.text, metadata=dict(h.metadata), id=h.chunk_id), h.score) for h in hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Any:
        return lambda score: (score + 1.0) / 2.0  # cosine in [-1, 1] → [0, 1]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        db: str | Path = "",
        index: str = "langchain",
        **kwargs: Any,
    ) -> NVRagVectorStore:
        if not db:
            raise ConfigError("NVRagVectorStore.from_texts needs db= (the LanceDB data directory)")
        if not isinstance(embedding, NVRagEmbeddings):
            raise TypeError("NVRagVectorStore embeds with nvrag's own models: pass NVRagEmbeddings")
        store = cls(embedding, db=db, index=index)
        store.add_texts(texts, metadatas, ids=ids)
        return store
