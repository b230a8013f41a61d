"""The indexing pipeline: documents → chunks → embeddings in batches → the store, incrementally.

A chunk's id covers the model, the chunker settings, the document, the chunk's position and its text, so a
re-run embeds only chunks it has not stored yet. Each batch is one atomic commit; chunks of a document that
changed are deleted only after the whole run's new chunks are stored, so a crash (even SIGKILL) loses at most
the batch in flight and never leaves a document with neither version. A rebuild with a new model or chunker
(``reembed``) is written beside the live index and switched in with one manifest commit at the end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from nvrag import __version__
from nvrag.embedder import Embedder
from nvrag.embedder.pinning import check_manifest_model, model_key, new_manifest, utc_now
from nvrag.errors import ConfigError, ModelMismatchError, NvRagError
from nvrag.indexer.chunking import check_settings, chunk_document, default_settings
from nvrag.indexer.loaders import UPLOAD_PREFIX, LoadFailure
from nvrag.indexer.reading import MAX_FAILURES_PER_FILE
from nvrag.schema import Chunk, ChunkerSettings, Document, IndexManifest
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
    documents_removed: int = 0  # documents pruned because they are no longer in the corpus
    reembedded: bool = False  # the index was rebuilt with a new model or chunker
    interrupted: bool = False  # stopped early (Ctrl-C); a re-run continues where it stopped
    # failures past the first MAX_FAILURES_PER_FILE of a file: counted here, listed as one line per file
    unlisted: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.failures) - len(self.unlisted) + sum(self.unlisted.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "documents": self.documents,
            "chunks_added": self.chunks_added,
            "chunks_unchanged": self.chunks_unchanged,
            "chunks_removed": self.chunks_removed,
            "documents_removed": self.documents_removed,
            "failed": self.failed,
            "reembedded": self.reembedded,
            "interrupted": self.interrupted,
            "failures": [{"source": f.source, "reason": f.reason} for f in self.failures],
        }


@dataclass(frozen=True)
class Progress:
    documents: int
    chunks_embedded: int
    items_seen: int = 0  # documents and failures read so far (for a bar against count_items)
    chunks_total: int | None = None  # the chunks this run will embed, when known in advance


class StopFlag:
    """Set from a signal handler to stop indexing cleanly after the batch in flight."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True


def embedding_text(chunk: Chunk, separator: str = "\n") -> str:
    """What is embedded for a chunk: its document's title (when there is one), the separator, then its text."""
    return f"{chunk.title}{separator}{chunk.text}" if chunk.title else chunk.text


class RunLedger:
    """The bookkeeping of one run, the same for every engine: documents seen (in load order), duplicates and
    empty documents reported, chunks already stored counted as unchanged, and stored chunks that a changed
    document no longer has collected as stale."""

    def __init__(self, report: IndexReport, stored: dict[str, set[str]]) -> None:
        self.report = report
        self.stored = stored
        self.seen_docs: set[str] = set()
        self.stale: set[str] = set()
        self._listed: dict[str, int] = {}

    def fail(self, source: str, reason: str, doc_id: str | None = None) -> None:
        """Report one item that was not indexed. Of a file's rows or lines (``FILE:N``) the first
        MAX_FAILURES_PER_FILE are listed and the rest counted (list_unlisted adds one line per file), so a
        million bad rows cost neither a million report lines nor a million objects."""
        head, _, line = source.rpartition(":")
        if not (head and line.isdigit()):  # a whole file, or what stopped its reading: always listed
            self.report.failures.append(LoadFailure(source, reason, doc_id))
            return
        where = head
        listed = self._listed.get(where, 0)
        if listed >= MAX_FAILURES_PER_FILE:
            self.report.unlisted[where] = self.report.unlisted.get(where, 0) + 1
            return
        self._listed[where] = listed + 1
        self.report.failures.append(LoadFailure(source, reason, doc_id))

    def list_unlisted(self) -> None:
        for where, more in self.report.unlisted.items():
            self.report.failures.append(
                LoadFailure(
                    where,
                    f"{more:,} more failures in this file (the first {MAX_FAILURES_PER_FILE} are listed above); "
                    "fix it and run again",
                )
            )

    def claim(self, doc_id: str, source: str, *, uploads: bool = False) -> bool:
        """Whether this is the first document with this id in the run (a later one is reported, skipped).

        Ids starting with UPLOAD_PREFIX belong to UI uploads (``uploads``) and to nothing else, so an upload
        never replaces a document indexed from elsewhere, nor the other way round."""
        if doc_id.startswith(UPLOAD_PREFIX) != uploads:
            why = (
                f"document ids starting with {UPLOAD_PREFIX!r} are reserved for files uploaded in the web UI; rename it"
                if not uploads
                else f"an upload's document id must start with {UPLOAD_PREFIX!r}"
            )
            self.fail(source, f"{why}; skipped", doc_id)
            return False
        if doc_id in self.seen_docs:
            self.fail(source, f"duplicate document id {doc_id!r}; skipped")
            return False
        self.seen_docs.add(doc_id)
        return True

    def admit(self, doc_id: str, source: str, chunk_ids: Sequence[str]) -> list[int]:
        """A claimed document's chunks: the positions of those to embed (the ones not stored yet)."""
        if not chunk_ids:
            self.fail(source, "no text to index; skipped")
            return []
        self.report.documents += 1
        have = self.stored.get(doc_id, set())
        self.stale |= have - set(chunk_ids)
        fresh = [i for i, c in enumerate(chunk_ids) if c not in have]
        self.report.chunks_unchanged += len(chunk_ids) - len(fresh)
        return fresh


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
        vector_dtype: str | None = None,
        quantization: str | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.batch_chunks = batch_chunks
        self.on_progress = on_progress
        # how vectors are stored; None: as the index stores them (float32, no quantization for a new index)
        self.vector_dtype = vector_dtype
        self.quantization = quantization
        self._seen = 0

    def _settings_for(self, live: ChunkerSettings | None) -> ChunkerSettings:
        if self.chunker is not None:
            return self.chunker
        limit = self.embedder.max_text_tokens
        if live is not None and (live.mode != "tokens" or live.chunk_tokens <= limit):
            return live
        return default_settings(limit)

    def _mismatch(self, manifest: IndexManifest) -> NvRagError | None:
        """Why this indexer cannot extend the index as it is (another model or chunker), or None."""
        try:
            check_manifest_model(manifest, self.embedder)
        except ModelMismatchError as exc:
            return ModelMismatchError(f"{exc}; or run again with --reembed to rebuild it with {self.embedder.name}")
        if self.chunker is not None and self.chunker != manifest.chunker:
            stored = manifest.chunker
            return ConfigError(
                f"index {manifest.name!r} was chunked with {stored.chunk_tokens} tokens and {stored.overlap_tokens} "
                f"overlap, not {self.chunker.chunk_tokens} and {self.chunker.overlap_tokens}: "
                "leave the chunk options out to use the index's settings, or add --reembed to rebuild it"
            )
        storage = self._storage(manifest)
        if storage != (manifest.vector_dtype, manifest.quantization):
            return ConfigError(
                f"index {manifest.name!r} stores {manifest.vector_dtype} vectors with quantization "
                f"{manifest.quantization!r}, not {storage[0]} with {storage[1]!r}: leave --vector-dtype and "
                "--quantize out to keep them, or add --reembed to rebuild it"
            )
        return None

    def _storage(self, live: IndexManifest | None) -> tuple[str, str]:
        """(vector dtype, quantization) for writing: as asked, else as the index has them, else the defaults."""
        return (
            self.vector_dtype or (live.vector_dtype if live else "float32"),
            self.quantization or (live.quantization if live else "none"),
        )

    def check(self, name: str, *, reembed: bool = False) -> None:
        """Raise if indexing into ``name`` cannot work (bad name, other model or chunker without reembed)."""
        check_index_name(name)
        if not self.store.exists(name):
            settings = self._settings_for(None)
            check_settings(settings, self.embedder.max_text_tokens)
            return
        problem = self._mismatch(self.store.open(name).manifest)
        if problem is not None and not reembed:
            raise problem
        if problem is not None:
            check_settings(self._settings_for(self.store.open(name).manifest.chunker), self.embedder.max_text_tokens)

    def open_or_create(self, name: str, *, reembed: bool = False) -> tuple[Table, bool, bool]:
        """The table to write: the index (created if new), or a rebuild beside it when reembedding.

        Returns (table, created, staged).
        """
        self.check(name, reembed=reembed)
        if not self.store.exists(name):
            settings = self._settings_for(None)
            manifest = new_manifest(name, self.embedder, settings, *self._storage(None))
            return self.store.create(manifest), True, False
        live = self.store.open(name)
        if self._mismatch(live.manifest) is None:
            return live, False, False
        settings = self._settings_for(live.manifest.chunker)
        staging = self.store.open_staging(name)
        if staging is not None:
            m = staging.manifest
            same_model = (m.model, m.model_revision, m.dimension) == (
                self.embedder.info.name,
                self.embedder.info.revision,
                self.embedder.dimension,
            )
            if (
                same_model
                and m.chunker == settings
                and (m.vector_dtype, m.quantization) == self._storage(live.manifest)
            ):
                return staging, False, True  # resume an interrupted rebuild
        staged = new_manifest(name, self.embedder, settings, *self._storage(live.manifest))
        return self.store.create_staging(staged), False, True

    def index(
        self,
        name: str,
        items: Iterable[Document | LoadFailure],
        *,
        prune: bool = False,
        reembed: bool = False,
        stop: StopFlag | None = None,
        uploads: bool = False,
    ) -> IndexReport:
        """Index ``items`` into ``name``; see the module docstring.

        ``prune`` deletes the chunks of documents that are no longer among ``items``; ``reembed`` allows a new
        model or chunker by rebuilding the index beside the old one and switching at the end; ``stop`` ends
        the run cleanly after the batch in flight; ``uploads`` marks items from the UI's uploads (their ids
        carry UPLOAD_PREFIX). The run holds the index's write lock: IndexBusyError if another writer has it.
        """
        check_index_name(name)
        with self.store.writing(name):
            return self._index(name, items, prune=prune, reembed=reembed, stop=stop, uploads=uploads)

    def _index(
        self,
        name: str,
        items: Iterable[Document | LoadFailure],
        *,
        prune: bool,
        reembed: bool,
        stop: StopFlag | None,
        uploads: bool,
    ) -> IndexReport:
        table, created, staged = self.open_or_create(name, reembed=reembed)
        self._seen = 0
        settings = table.manifest.chunker
        key = model_key(self.embedder)
        report = IndexReport(index=name, created=created)
        ledger = RunLedger(report, table.chunk_ids_by_doc())
        pending: list[Chunk] = []
        for item in items:
            self._seen += 1
            if isinstance(item, LoadFailure):
                ledger.fail(item.source, item.reason, item.doc_id)
                continue
            if not ledger.claim(item.doc_id, item.source, uploads=uploads):
                continue
            try:
                chunks = chunk_document(item, self.embedder.token_spans, settings, key)
            except ValueError as exc:  # a chunk over the size limit
                ledger.fail(item.source, str(exc), item.doc_id)
                continue
            fresh = ledger.admit(item.doc_id, item.source, [c.chunk_id for c in chunks])
            pending.extend(chunks[i] for i in fresh)
            while len(pending) >= self.batch_chunks:
                self._commit(table, pending[: self.batch_chunks], report)
                pending = pending[self.batch_chunks :]
            if stop is not None and stop.requested:
                report.interrupted = True
                break
        if pending and not report.interrupted:
            self._commit(table, pending, report)
        self.finish(name, table, ledger, prune=prune, staged=staged)
        return report

    def finish(self, name: str, table: Table, ledger: RunLedger, *, prune: bool, staged: bool) -> None:
        """End a run whose new chunks are all stored: drop stale chunks (and, with ``prune``, the chunks of
        documents not seen), switch in a rebuild, refresh the text index and stamp the manifest. An
        interrupted run only stamps the manifest: its next run finishes the job."""
        report = ledger.report
        ledger.list_unlisted()
        if not report.interrupted:
            stale = ledger.stale
            if prune:
                gone = set(ledger.stored) - ledger.seen_docs - _failed_documents(table, ledger)
                report.documents_removed = len(gone)
                for doc_id in gone:
                    stale |= ledger.stored[doc_id]
            if stale:
                table.delete(stale)
                report.chunks_removed = len(stale)
            if staged:
                table = self.store.publish_staging(name)
                report.reembedded = True
        if report.chunks_added or report.chunks_removed or report.reembedded:
            table.refresh_text_index()
            table.set_manifest(replace(table.manifest, updated_at=utc_now(), nvrag_version=__version__))

    def _commit(self, table: Table, chunks: list[Chunk], report: IndexReport) -> None:
        separator = table.manifest.chunker.title_separator
        vectors = self.embedder.embed_documents([embedding_text(c, separator) for c in chunks])
        table.upsert(chunks, vectors)
        report.chunks_added += len(chunks)
        if self.on_progress is not None:
            self.on_progress(Progress(report.documents, report.chunks_added, self._seen))


_LINE_SUFFIX = re.compile(r":\d+$")


def _failed_documents(table: Table, ledger: RunLedger) -> set[str]:
    """Stored documents that this run failed to read (so --prune keeps them): those a failure names, and those
    whose source file (or a directory above it) failed as a whole, when the failure could not name them."""
    failed = {f.doc_id for f in ledger.report.failures if f.doc_id is not None}
    paths: set[str] = set()
    for f in ledger.report.failures:
        if f.doc_id is None:
            where = _LINE_SUFFIX.sub("", f.source) if not os.path.exists(f.source) else f.source
            paths |= {os.path.abspath(where), os.path.realpath(where)}
    if not paths:
        return failed
    unseen = {doc: min(ids) for doc, ids in ledger.stored.items() if doc not in ledger.seen_docs}
    for chunk in table.get(sorted(unseen.values())):
        if _within(chunk.source, paths) or _within(_LINE_SUFFIX.sub("", chunk.source), paths):
            failed.add(chunk.doc_id)
    return failed


def _within(path: str, roots: set[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies below one (walking up: linear in the path's depth)."""
    while True:
        if path in roots:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
