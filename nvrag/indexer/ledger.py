"""The bookkeeping of one indexing run, the same for every engine: its report, the documents it has seen, the
chunks it keeps and the stale ones it replaces, and whose documents it may change (their origin: PATH, the
HTTP API or an upload; ``loaders.document_origin``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nvrag.indexer.loaders import ORIGIN_WORDS, UPLOAD_PREFIX, LoadFailure, document_origin, split_line
from nvrag.indexer.reading import MAX_FAILURES_PER_FILE
from nvrag.store import Table


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
    skipped: dict[str, int] = field(default_factory=dict)  # files of PATH nvrag does not read, by suffix
    not_in_path: int = 0  # documents of the index (from files) that this run's PATH no longer has (no --prune)

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
            "skipped": dict(sorted(self.skipped.items())),
            "not_in_path": self.not_in_path,
        }


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


def stored_origins(table: Table, docs: dict[str, set[str]]) -> dict[str, str]:
    """The origin of each stored document named (doc id -> its stored chunk ids), from one chunk of each."""
    firsts = {min(ids): doc for doc, ids in docs.items() if ids}
    origins = {doc: document_origin(doc, "") for doc in docs}
    for chunk in table.get(sorted(firsts)):
        origins[chunk.doc_id] = document_origin(chunk.doc_id, chunk.source)
    return origins


def failed_documents(table: Table, ledger: RunLedger) -> set[str]:
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
