"""What every indexing engine shares: the Engine interface, the run's report and progress, and the two ends of
a run that must be the same everywhere: opening the index (``open_run``) and finishing it (``finish_run``).

An engine runs an ``IndexRequest`` (``Engine.run(request, progress, stop) -> IndexReport``) holding the index's
write lock for the whole run. Between ``open_run`` and ``finish_run`` it only reads its source, chunks, embeds,
feeds the ``RunLedger`` in load order and commits batches through the table's writer (``Table.writer``).

A chunk's id covers the model, the chunker settings, the document, the chunk's position and its text, so a
re-run embeds only chunks it has not stored yet. Each batch is one atomic commit; chunks of a document that
changed are deleted only after the whole run's new chunks are stored, so a crash (even SIGKILL) loses at most
the batch in flight and never leaves a document with neither version. A rebuild with a new model or chunker
(``reembed``) is written beside the live index and switched in with one manifest commit at the end.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from nvrag import __version__
from nvrag.embedder import Embedder
from nvrag.embedder.pinning import check_manifest_model, model_key, new_manifest, utc_now
from nvrag.errors import ConfigError, ModelMismatchError, NvRagError
from nvrag.indexer.chunking import check_settings, default_settings
from nvrag.indexer.loaders import ORIGIN_WORDS, UPLOAD_PREFIX, LoadFailure, document_origin, split_line
from nvrag.indexer.reading import MAX_FAILURES_PER_FILE
from nvrag.indexer.request import IndexRequest
from nvrag.schema import Chunk, ChunkerSettings, IndexManifest
from nvrag.store import Store, Table, storage_errors
from nvrag.store.base import TableWriter, document_groups


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
    items_seen: int = 0  # documents and failures read so far
    chunks_total: int | None = None  # the chunks this run will embed, when known in advance (the Ray engine)
    items_total: int | None = None  # the documents and failures the source holds, when counted in advance


ProgressFn = Callable[[Progress], None]


class StopFlag:
    """Set from a signal handler to stop indexing cleanly after the batch in flight."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True


def embedding_text(chunk: Chunk, separator: str = "\n") -> str:
    """What is embedded for a chunk: its document's title (when there is one), the separator, then its text."""
    return f"{chunk.title}{separator}{chunk.text}" if chunk.title else chunk.text


class Engine(ABC):
    """Runs indexing requests into one store with one model. Wiring alone picks the engine."""

    def __init__(self, store: Store, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder

    def run(
        self, request: IndexRequest, progress: ProgressFn | None = None, stop: StopFlag | None = None
    ) -> IndexReport:
        """Run ``request``; see the module docstring. ``progress`` is called after each commit; ``stop`` ends
        the run cleanly after the batch in flight.
        The run holds the index's write lock (IndexBusyError when another writer has it)."""
        self.check(request)
        with storage_errors(self.store.location), self.store.writing(request.index):
            return self._run(request, progress, stop)

    def check(self, request: IndexRequest) -> None:  # noqa: B027 (a hook: most engines refuse nothing more)
        """What this engine refuses before taking the lock (nothing is written yet)."""

    @abstractmethod
    def _run(self, request: IndexRequest, progress: ProgressFn | None, stop: StopFlag | None) -> IndexReport: ...


OriginFn = Callable[[str], str]  # a stored document's id -> its origin (loaders.document_origin)


class RunLedger:
    """The bookkeeping of one run, the same for every engine: documents seen (in load order), duplicates and
    empty documents reported, chunks already stored counted as unchanged, and stored chunks that a changed
    document no longer has collected as stale. ``uploads``: the run indexes UI uploads (UPLOAD_PREFIX ids).

    Ownership: a run replaces a stored document only if it is of the run's ``origin`` (or with
    ``replace_other_origins``); ``stored_origin`` tells a stored document's origin, asked only for documents
    this run would change."""

    def __init__(
        self,
        report: IndexReport,
        stored: dict[str, set[str]],
        *,
        uploads: bool = False,
        origin: str = "path",
        stored_origin: OriginFn | None = None,
        replace_other_origins: bool = False,
    ) -> None:
        self.report = report
        self.stored = stored
        self.uploads = uploads
        self.origin = origin
        self.stored_origin = stored_origin
        self.replace_other_origins = replace_other_origins
        self.seen_docs: set[str] = set()
        self.stale: dict[str, set[str]] = {}  # doc id -> its stored chunks that its new version drops
        self._listed: dict[str, int] = {}

    def fail(self, source: str, reason: str, doc_id: str | None = None) -> None:
        """Report one item that was not indexed. Of a file's rows or lines (``FILE:N``) the first
        MAX_FAILURES_PER_FILE are listed and the rest counted (list_unlisted adds one line per file), so a
        million bad rows cost neither a million report lines nor a million objects."""
        where, line = split_line(source)
        if line is None:  # a whole file, or what stopped its reading: always listed
            self.report.failures.append(LoadFailure(source, reason, doc_id))
            return
        listed = self._listed.get(where, 0)
        if listed >= MAX_FAILURES_PER_FILE:
            self.report.unlisted[where] = self.report.unlisted.get(where, 0) + 1
            return
        self._listed[where] = listed + 1
        self.report.failures.append(LoadFailure(source, reason, doc_id))

    def release(self, doc_ids: Sequence[str]) -> set[str]:
        """The stale chunks of these documents, handed to the commit that writes their new chunks (and so no
        longer this ledger's to remove)."""
        return {c for doc in doc_ids for c in self.stale.pop(doc, ())}

    def list_unlisted(self) -> None:
        for where, more in self.report.unlisted.items():
            self.report.failures.append(
                LoadFailure(
                    where,
                    f"{more:,} more failures in this file (the first {MAX_FAILURES_PER_FILE} are listed above); "
                    "fix it and run again",
                )
            )

    def claim(self, doc_id: str, source: str) -> bool:
        """Whether this is the first document with this id in the run (a later one is reported, skipped).

        Ids starting with UPLOAD_PREFIX belong to UI uploads and to nothing else, so an upload never replaces
        a document indexed from elsewhere, nor the other way round."""
        if doc_id.startswith(UPLOAD_PREFIX) != self.uploads:
            why = (
                f"document ids starting with {UPLOAD_PREFIX!r} are reserved for files uploaded in the web UI; rename it"
                if not self.uploads
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
        have = self.stored.get(doc_id, set())
        changes = bool(have) and have != set(chunk_ids)
        owner = (
            self.stored_origin(doc_id) if changes and self.stored_origin and not self.replace_other_origins else None
        )
        if owner is not None and owner != self.origin:
            self.fail(
                source,
                f"document {doc_id!r} was added {ORIGIN_WORDS[owner]} and this run adds documents "
                f"{ORIGIN_WORDS[self.origin]}: it is kept as it is (replacing it needs replace_other_origins: "
                "nvrag index --replace-other-origins, or replace_other_origins=true over HTTP)",
                doc_id,
            )
            return []
        self.report.documents += 1
        dropped = have - set(chunk_ids)
        if dropped:
            self.stale[doc_id] = dropped
        fresh = [i for i, c in enumerate(chunk_ids) if c not in have]
        self.report.chunks_unchanged += len(chunk_ids) - len(fresh)
        return fresh


@dataclass
class Run:
    """An opened run: the table it writes (the index, or its rebuild), its writer, report and ledger."""

    request: IndexRequest
    table: Table
    writer: TableWriter
    staged: bool  # a rebuild beside the live index, switched in by finish_run
    ledger: RunLedger
    model_key: str

    @property
    def report(self) -> IndexReport:
        return self.ledger.report

    @property
    def chunker(self) -> ChunkerSettings:
        return self.table.manifest.chunker


def open_run(store: Store, embedder: Embedder, request: IndexRequest) -> Run:
    """Open (or create) what the run writes, with the rules that need the index or the model checked once:
    the model the index pins, its chunker and its storage (without ``reembed``), and the chunk size against
    the model's limit."""
    name = request.index
    created = staged = False
    if not store.exists(name):
        settings = _chunker_for(request, embedder, None)
        table = store.create(new_manifest(name, embedder, settings, *_storage(request, None)))
        created = True
    else:
        table = store.open(name)
        problem = _mismatch(table.manifest, embedder, request)
        if problem is not None and not request.reembed:
            raise problem
        if problem is not None:
            table = _rebuild(store, table.manifest, embedder, request)
            staged = True
    report = IndexReport(index=name, created=created)
    stored = table.chunk_ids_by_doc()
    ledger = RunLedger(
        report,
        stored,
        uploads=request.uploads,
        origin=request.origin,
        stored_origin=lambda doc_id: stored_origins(table, {doc_id: stored[doc_id]})[doc_id],
        replace_other_origins=request.replace_other_origins,
    )
    return Run(request, table, table.writer(), staged, ledger, model_key(embedder))


def _chunker_for(request: IndexRequest, embedder: Embedder, live: ChunkerSettings | None) -> ChunkerSettings:
    """The request's chunker, else the index's own (while it fits the model), else the model's default."""
    limit = embedder.max_text_tokens
    if request.chunker is not None:
        settings = request.chunker
    elif live is not None and (live.mode != "tokens" or live.chunk_tokens <= limit):
        settings = live
    else:
        settings = default_settings(limit)
    check_settings(settings, limit)
    return settings


def _storage(request: IndexRequest, live: IndexManifest | None) -> tuple[str, str]:
    """(vector dtype, quantization) for writing: as asked, else as the index has them, else the defaults."""
    return (
        request.vector_dtype or (live.vector_dtype if live else "float32"),
        request.quantization or (live.quantization if live else "none"),
    )


def _mismatch(manifest: IndexManifest, embedder: Embedder, request: IndexRequest) -> NvRagError | None:
    """Why this run cannot extend the index as it is (another model, chunker or storage), or None."""
    try:
        check_manifest_model(manifest, embedder, writing=True)
    except ModelMismatchError as exc:
        return exc
    if request.chunker is not None and request.chunker != manifest.chunker:
        stored, asked = manifest.chunker, request.chunker
        return ConfigError(
            f"index {manifest.name!r} was chunked with {stored.chunk_tokens} tokens and {stored.overlap_tokens} "
            f"overlap, not {asked.chunk_tokens} and {asked.overlap_tokens}: "
            "leave the chunk options out to use the index's settings, or add --reembed to rebuild it"
        )
    storage = _storage(request, manifest)
    if storage != (manifest.vector_dtype, manifest.quantization):
        return ConfigError(
            f"index {manifest.name!r} stores {manifest.vector_dtype} vectors with quantization "
            f"{manifest.quantization!r}, not {storage[0]} with {storage[1]!r}: leave --vector-dtype and "
            "--quantize out to keep them, or add --reembed to rebuild it"
        )
    return None


def _rebuild(store: Store, live: IndexManifest, embedder: Embedder, request: IndexRequest) -> Table:
    """The rebuild's table: an interrupted rebuild of the same settings resumed, else a new one."""
    settings = _chunker_for(request, embedder, live.chunker)
    storage = _storage(request, live)
    staging = store.open_staging(live.name)
    if staging is not None:
        m, info = staging.manifest, embedder.info
        if (m.model, m.model_revision, m.dimension, m.chunker, m.vector_dtype, m.quantization) == (
            info.name,
            info.revision,
            info.dimension,
            settings,
            *storage,
        ):
            return staging
    return store.create_staging(new_manifest(live.name, embedder, settings, *storage))


def finish_run(store: Store, run: Run) -> IndexReport:
    """End a run whose new chunks are all committed: drop stale chunks (and, with ``prune``, the chunks of
    documents not seen), switch in a rebuild, refresh the text index and stamp the manifest. An interrupted
    run only stamps the manifest: its next run finishes the job."""
    run.writer.finish()
    report, ledger, table = run.report, run.ledger, run.table
    ledger.list_unlisted()
    if not report.interrupted:
        gone: dict[str, set[str]] = dict(ledger.stale)  # stale chunks no commit took (the Ray engine's)
        if run.request.prune:
            unseen = {doc: ids for doc, ids in ledger.stored.items() if doc not in ledger.seen_docs}
            origins = stored_origins(table, unseen)
            # only this run's own origin is pruned: API documents and uploads are not in PATH, and stay
            pruned = {doc for doc in unseen if origins[doc] == ledger.origin} - _failed_documents(table, ledger)
            report.documents_removed = len(pruned)
            gone |= {doc: unseen[doc] for doc in pruned}
        for group in document_groups(gone):  # whole documents per commit: a kill never halves one
            table.delete(group)
            report.chunks_removed += len(group)
        if run.staged:
            table = store.publish_staging(run.request.index)
            report.reembedded = True
    if report.chunks_added or report.chunks_removed or report.reembedded:
        table.refresh_text_index()
        table.set_manifest(replace(table.manifest, updated_at=utc_now(), nvrag_version=__version__))
    return report


def delete_documents(store: Store, name: str, doc_ids: Sequence[str], *, origins: set[str] | None = None) -> int:
    """Remove documents from an index, under its write lock; how many chunks were removed. ``origins``: remove
    only documents of these origins (a document of another origin is refused with a ConfigError naming it)."""
    with storage_errors(store.location), store.writing(name):
        table = store.open(name)
        stored = table.chunk_ids_by_doc()
        found = {doc: stored[doc] for doc in doc_ids if doc in stored}
        if origins is not None:
            for doc, origin in stored_origins(table, found).items():
                if origin not in origins:
                    raise ConfigError(
                        f"document {doc!r} of index {name!r} was added {ORIGIN_WORDS[origin]}; it is not removed "
                        "(removing it needs replace_other_origins)"
                    )
        gone = {c for ids in found.values() for c in ids}
        for group in document_groups(found):  # whole documents per commit
            table.delete(group)
        if gone:
            table.refresh_text_index()
            table.set_manifest(replace(table.manifest, updated_at=utc_now(), nvrag_version=__version__))
        return len(gone)


def stored_origins(table: Table, docs: dict[str, set[str]]) -> dict[str, str]:
    """The origin of each stored document named (doc id -> its stored chunk ids), from one chunk of each."""
    firsts = {min(ids): doc for doc, ids in docs.items() if ids}
    origins = {doc: document_origin(doc, "") for doc in docs}
    for chunk in table.get(sorted(firsts)):
        origins[chunk.doc_id] = document_origin(chunk.doc_id, chunk.source)
    return origins


def _failed_documents(table: Table, ledger: RunLedger) -> set[str]:
    """Stored documents that this run failed to read (so --prune keeps them): those a failure names, and those
    whose source file (or a directory above it) failed as a whole, when the failure could not name them."""
    failed = {f.doc_id for f in ledger.report.failures if f.doc_id is not None}
    paths: set[str] = set()
    for f in ledger.report.failures:
        if f.doc_id is None:
            where = split_line(f.source)[0] if not os.path.exists(f.source) else f.source
            paths |= {os.path.abspath(where), os.path.realpath(where)}
    if not paths:
        return failed
    unseen = {doc: min(ids) for doc, ids in ledger.stored.items() if doc not in ledger.seen_docs}
    for chunk in table.get(sorted(unseen.values())):
        if _within(chunk.source, paths) or _within(split_line(chunk.source)[0], paths):
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
