"""The local engine: documents → chunks → embeddings in batches → the store, in this process.

``Indexer`` runs IndexRequests (``Indexer.run``, the Engine interface) and is also the Python entry point for
documents already in hand: ``Indexer(store, embedder).index("name", documents)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from nvrag.embedder import Embedder
from nvrag.errors import ConfigError
from nvrag.indexer.chunking import chunk_document
from nvrag.indexer.engine import (
    Engine,
    Progress,
    ProgressFn,
    StopFlag,
    embedding_text,
    finish_run,
    open_run,
)
from nvrag.indexer.ledger import IndexReport
from nvrag.indexer.loaders import LoadFailure, count_items, load_corpus
from nvrag.indexer.request import DEFAULT_BATCH_CHUNKS, IndexRequest, ItemsSource, PathSource
from nvrag.schema import Chunk, ChunkerSettings, Document
from nvrag.store import Store


class Indexer(Engine):
    """Indexes into a store with one embedder, in this process.

    The keyword arguments are the defaults of ``index`` (the documents-in-hand entry point); ``run`` takes
    everything from its request.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        chunker: ChunkerSettings | None = None,
        batch_chunks: int = DEFAULT_BATCH_CHUNKS,
        on_progress: ProgressFn | None = None,
        vector_dtype: str | None = None,
        quantization: str | None = None,
    ) -> None:
        super().__init__(store, embedder)
        self.chunker = chunker
        self.batch_chunks = batch_chunks
        self.on_progress = on_progress
        self.vector_dtype = vector_dtype
        self.quantization = quantization

    def index(
        self,
        name: str,
        items: Iterable[Document | LoadFailure] | Path,
        *,
        prune: bool = False,
        reembed: bool = False,
        stop: StopFlag | None = None,
        uploads: bool = False,
    ) -> IndexReport:
        """Index ``items`` into ``name`` (see IndexRequest for the options; ``uploads``: UI uploads). A Path is
        read as `nvrag index PATH` reads it (a data directory inside it left out, its documents PATH's own)."""
        if isinstance(items, Path) and uploads:
            raise ConfigError("uploads are documents already read: pass them as items, not a path")
        request = IndexRequest(
            name,
            PathSource(items) if isinstance(items, Path) else ItemsSource(items, uploads=uploads),
            chunker=self.chunker,
            vector_dtype=self.vector_dtype,
            quantization=self.quantization,
            prune=prune,
            reembed=reembed,
            batch_size=self.batch_chunks,
        )
        return self.run(request, self.on_progress, stop)

    def _run(self, request: IndexRequest, progress: ProgressFn | None, stop: StopFlag | None) -> IndexReport:
        run = open_run(self.store, self.embedder, request)
        total, items = _items(request)
        report, ledger = run.report, run.ledger
        batch = request.batch_chunks
        seen = 0
        pending: list[Chunk] = []
        pending_docs: list[str] = []  # whole documents only: a commit never holds part of one

        def commit(chunks: list[Chunk], docs: list[str]) -> None:
            # a document's new chunks and the removal of its old ones are one commit (TableWriter.commit)
            replaced = ledger.release(docs)
            staged = []
            if chunks:
                texts = [embedding_text(c, run.chunker.title_separator) for c in chunks]
                staged = [run.writer.stage(chunks, self.embedder.embed_documents(texts))]
            run.writer.commit(staged, replaced)
            report.chunks_added += len(chunks)
            report.chunks_removed += len(replaced)
            if progress is not None:
                progress(Progress(report.documents, report.chunks_added, seen, items_total=total))

        for item in items:
            seen += 1
            if isinstance(item, LoadFailure):
                ledger.fail(item.source, item.reason, item.doc_id)
                continue
            if not ledger.claim(item.doc_id, item.source):
                continue
            try:
                chunks = chunk_document(item, self.embedder.token_spans, run.chunker, run.model_key)
            except ValueError as exc:  # a chunk over the size limit
                ledger.fail(item.source, str(exc), item.doc_id)
                continue
            fresh = ledger.admit(item.doc_id, item.source, [c.chunk_id for c in chunks])
            if fresh or item.doc_id in ledger.stale:
                pending.extend(chunks[i] for i in fresh)
                pending_docs.append(item.doc_id)
            if len(pending) >= batch:  # at a document's end: a large document is one commit of its own
                commit(pending, pending_docs)
                pending, pending_docs = [], []
            if stop is not None and stop.requested:
                report.interrupted = True
                break
        if pending_docs and not report.interrupted:
            commit(pending, pending_docs)
        return finish_run(self.store, run)


def _items(request: IndexRequest) -> tuple[int | None, Iterator[Document | LoadFailure]]:
    """The request's items, and how many a path holds (for a progress bar) when that can be counted."""
    source = request.source
    if isinstance(source, PathSource):
        return count_items(source.path, source.exclude), load_corpus(source.path, source.columns, source.exclude)
    assert isinstance(source, ItemsSource)
    return None, iter(source.items)
