"""Everyday management of what was indexed: list an index's documents, drop an index (under its write lock,
so never while a writer runs). Removing documents is ``engine.delete_documents``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC

from nvrag.indexer.loaders import document_origin
from nvrag.schema import JSONValue
from nvrag.store import Store
from nvrag.store.failures import storage_errors


@dataclass(frozen=True)
class StoredDocument:
    """One document of an index: its id, origin (path, api or upload), source, how many chunks it has, and when
    it last changed (its newest chunk's write, ISO 8601 UTC; None where the index predates that record)."""

    id: str
    origin: str
    source: str
    chunks: int
    updated: str | None

    def to_dict(self) -> dict[str, JSONValue]:
        return dict(asdict(self))


def list_documents(store: Store, name: str, offset: int = 0, limit: int | None = None) -> list[StoredDocument]:
    """The documents of index ``name``, sorted by id, from ``offset`` (at most ``limit`` of them; None: all);
    IndexNotFoundError naming the known indexes. Only the listed documents' chunks are read."""
    table = store.open(name)
    grouped = table.chunk_ids_by_doc()
    page = sorted(grouped)[offset : None if limit is None else offset + limit]
    first = [min(grouped[doc]) for doc in page if grouped[doc]]
    sources = {chunk.doc_id: chunk.source for chunk in table.get(first)}
    times = table.indexed_at(c for doc in page for c in grouped[doc])
    found = []
    for doc in page:
        newest = max((times[c] for c in grouped[doc] if c in times), default=None)
        updated = (
            None if newest is None else newest.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
        source = sources.get(doc, "")
        found.append(StoredDocument(doc, document_origin(doc, source), source, len(grouped[doc]), updated))
    return found


def drop_index(store: Store, name: str) -> int:
    """Remove index ``name`` and its rows; how many rows it had. Refused (IndexBusyError) while another process
    writes it; IndexNotFoundError if there is none."""
    with storage_errors(store.location), store.writing(name):
        rows = store.open(name).count()
        store.drop(name)
        return rows
