"""What every indexing engine shares: the Engine interface, the run's report and progress, and the two ends of
a run that must be the same everywhere: opening the index (``open_run``) and finishing it (``finish_run``).

An engine runs an ``IndexRequest`` (``Engine.run(request, progress, stop) -> IndexReport``) holding the index's
write lock for the whole run. Between ``open_run`` and ``finish_run`` it only reads its source, chunks, embeds,
feeds the ``RunLedger`` in load order and commits batches through the table's writer (``Table.writer``).

A chunk's id covers the model, the chunker settings, the document, the chunk's position and its text, so a
re-run embeds only chunks it has not stored yet. Each batch is one atomic commit of whole documents that also
removes their old chunks (``TableWriter.commit``), so a reader or a crash (even SIGKILL) sees every document
wholly old or wholly new, and a crash loses at most the batch in flight. A rebuild with a new model or chunker
(``reembed``) is written beside the live index and switched in with one manifest commit at the end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from nvrag import __version__
from nvrag.embedder import Embedder
from nvrag.embedder.pinning import check_manifest_model, model_key, new_manifest, utc_now
from nvrag.errors import ConfigError, ModelMismatchError, NvRagError
from nvrag.indexer.chunking import check_settings, default_settings
from nvrag.indexer.ledger import IndexReport, RunLedger, failed_documents, stored_origins
from nvrag.indexer.loaders import ORIGIN_WORDS, unsupported_files
from nvrag.indexer.request import IndexRequest, PathSource
from nvrag.schema import ChunkerSettings, IndexManifest, passage_text
from nvrag.store import Store, Table, storage_errors
from nvrag.store.base import TableWriter, document_groups


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


embedding_text = passage_text  # what is embedded for a chunk (schema.passage_text)


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
        folder = self.store.local_dir()
        if folder is not None and isinstance(request.source, PathSource):
            # the store's own files (indexes, locks, reports, uploads) are never documents, were they inside PATH
            request = replace(request, source=replace(request.source, exclude=(*request.source.exclude, folder)))
        with storage_errors(self.store.location), self.store.writing(request.index):
            return self._run(request, progress, stop)

    def check(self, request: IndexRequest) -> None:  # noqa: B027 (a hook: most engines refuse nothing more)
        """What this engine refuses before taking the lock (nothing is written yet)."""

    @abstractmethod
    def _run(self, request: IndexRequest, progress: ProgressFn | None, stop: StopFlag | None) -> IndexReport: ...


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
        wanted = request.chunker_asked or f"{asked.chunk_tokens} tokens and {asked.overlap_tokens} overlap"
        return ConfigError(
            f"index {manifest.name!r} was chunked with {stored.chunk_tokens} tokens and {stored.overlap_tokens} "
            f"overlap; this run asks for {wanted}: leave the chunk options out to use the index's settings, or "
            "add --reembed to rebuild it"
        )
    storage = _storage(request, manifest)
    if storage != (manifest.vector_dtype, manifest.quantization):
        given = [f"{flag} {value}" for flag, value in (("--vector-dtype", request.vector_dtype),
                                                        ("--quantize", request.quantization)) if value]  # fmt: skip
        return ConfigError(
            f"index {manifest.name!r} stores {manifest.vector_dtype} vectors with quantization "
            f"{manifest.quantization!r}; this run asks for {' '.join(given)}: leave --vector-dtype and "
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
    if isinstance(run.request.source, PathSource):
        report.skipped = unsupported_files(run.request.source.path, run.request.source.exclude)
    ledger.list_unlisted()
    if not report.interrupted:
        gone: dict[str, set[str]] = dict(ledger.stale)  # stale chunks no commit took (the Ray engine's)
        if run.request.prune:
            unseen = {doc: ids for doc, ids in ledger.stored.items() if doc not in ledger.seen_docs}
            origins = stored_origins(table, unseen)
            # only this run's own origin is pruned: API documents and uploads are not in PATH, and stay
            pruned = {doc for doc in unseen if origins[doc] == ledger.origin} - failed_documents(table, ledger)
            report.documents_removed = len(pruned)
            gone |= {doc: unseen[doc] for doc in pruned}
        elif isinstance(run.request.source, PathSource):
            unseen = {doc: ids for doc, ids in ledger.stored.items() if doc not in ledger.seen_docs}
            origins = stored_origins(table, unseen)
            mine = {doc for doc in unseen if origins[doc] == ledger.origin}
            report.not_in_path = len(mine - failed_documents(table, ledger))
        for group in document_groups(gone):  # whole documents per commit: a kill never halves one
            table.delete(group)
            report.chunks_removed += len(group)
        if run.staged:
            table = store.publish_staging(run.request.index)
            report.reembedded = True
    if report.chunks_added or report.chunks_removed or report.reembedded:
        table.refresh_indexes()
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
            table.refresh_indexes()
            table.set_manifest(replace(table.manifest, updated_at=utc_now(), nvrag_version=__version__))
        return len(gone)
