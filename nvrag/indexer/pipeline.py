"""The indexing pipeline: documents → chunks → embeddings in batches → the store, incrementally.

A chunk's id covers the model, the chunker settings, the document, the chunk's position and its text, so a
re-run embeds only chunks it has not stored yet. Each batch is one atomic commit; chunks of a document that
changed are deleted only after the document's new chunks are stored, so a crash never loses indexed text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from nvrag import __version__
from nvrag.embedder import Embedder
from nvrag.embedder.pinning import check_manifest_model, model_key, new_manifest, utc_now
from nvrag.errors import ConfigError
from nvrag.indexer.chunking import check_settings, chunk_document, default_settings
from nvrag.indexer.loaders import LoadFailure
from nvrag.schema import Chunk, ChunkerSettings, Document
from nvrag.store import Store, Table, check_index_name


@dataclass
class IndexReport:
    """What one indexing run did."""

    index: str
    documents: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    failures: list[LoadFailure] = field(default_factory=list)
    created: bool = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "documents": self.documents,
            "chunks_added": self.chunks_added,
            "chunks_unchanged": self.chunks_unchanged,
            "chunks_removed": self.chunks_removed,
            "failed": self.failed,
            "failures": [{"source": f.source, "reason": f.reason} for f in self.failures],
        }


@dataclass(frozen=True)
class Progress:
    documents: int
    chunks_embedded: int


def embedding_text(chunk: Chunk, separator: str = "\n") -> str:
    """What is embedded for a chunk: its document's title (when there is one), the separator, then its text."""
    return f"{chunk.title}{separator}{chunk.text}" if chunk.title else chunk.text


class Indexer:
    """Indexes documents into a named index of a store with one embedder."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        chunker: ChunkerSettings | None = None,
        batch_chunks: int = 256,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.batch_chunks = batch_chunks
        self.on_progress = on_progress

    def check(self, name: str) -> None:
        """Raise if indexing into ``name`` cannot work (bad name, other model, other chunker settings)."""
        check_index_name(name)
        if not self.store.exists(name):
            check_settings(
                self.chunker or default_settings(self.embedder.max_text_tokens), self.embedder.max_text_tokens
            )
            return
        manifest = self.store.open(name).manifest
        check_manifest_model(manifest, self.embedder)
        if self.chunker is not None and self.chunker != manifest.chunker:
            stored = manifest.chunker
            raise ConfigError(
                f"index {name!r} was chunked with {stored.chunk_tokens} tokens and {stored.overlap_tokens} "
                f"overlap, not {self.chunker.chunk_tokens} and {self.chunker.overlap_tokens}: "
                "leave the chunk options out to use the index's settings, or build a new index"
            )

    def open_or_create(self, name: str) -> tuple[Table, bool]:
        """The index's table, created with this embedder and chunker if it does not exist yet."""
        self.check(name)
        if self.store.exists(name):
            return self.store.open(name), False
        settings = self.chunker or default_settings(self.embedder.max_text_tokens)
        return self.store.create(new_manifest(name, self.embedder, settings)), True

    def index(self, name: str, items: Iterable[Document | LoadFailure]) -> IndexReport:
        table, created = self.open_or_create(name)
        settings = table.manifest.chunker
        key = model_key(self.embedder)
        report = IndexReport(index=name, created=created)
        stored = table.chunk_ids_by_doc()
        seen_docs: set[str] = set()
        stale: set[str] = set()
        pending: list[Chunk] = []
        for item in items:
            if isinstance(item, LoadFailure):
                report.failures.append(item)
                continue
            if item.doc_id in seen_docs:
                report.failures.append(LoadFailure(item.source, f"duplicate document id {item.doc_id!r}; skipped"))
                continue
            seen_docs.add(item.doc_id)
            chunks = chunk_document(item, self.embedder.token_spans, settings, key)
            if not chunks:
                report.failures.append(LoadFailure(item.source, "no text to index; skipped"))
                continue
            report.documents += 1
            have = stored.get(item.doc_id, set())
            ids = {c.chunk_id for c in chunks}
            stale |= have - ids
            fresh = [c for c in chunks if c.chunk_id not in have]
            report.chunks_unchanged += len(chunks) - len(fresh)
            pending.extend(fresh)
            while len(pending) >= self.batch_chunks:
                self._commit(table, pending[: self.batch_chunks], report)
                pending = pending[self.batch_chunks :]
        if pending:
            self._commit(table, pending, report)
        if stale:
            table.delete(stale)
            report.chunks_removed = len(stale)
        if report.chunks_added or report.chunks_removed:
            table.refresh_text_index()
            table.set_manifest(replace(table.manifest, updated_at=utc_now(), nvrag_version=__version__))
        return report

    def _commit(self, table: Table, chunks: list[Chunk], report: IndexReport) -> None:
        separator = table.manifest.chunker.title_separator
        vectors = self.embedder.embed_documents([embedding_text(c, separator) for c in chunks])
        table.upsert(chunks, vectors)
        report.chunks_added += len(chunks)
        if self.on_progress is not None:
            self.on_progress(Progress(documents=report.documents, chunks_embedded=report.chunks_added))
