"""The Store interface: named indexes of vectors with their chunks and manifest. Knows nothing of models.

A ``Store`` is one data directory (or URI) holding many indexes; a ``Table`` is one index. Vectors arrive
L2-normalised, so a table's score is the cosine similarity.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nvrag.errors import ConfigError, IndexNotFoundError
from nvrag.schema import Chunk, FilterCondition, IndexManifest
from nvrag.store.manifests import read_manifest
from nvrag.store.probes import ProbeQueries

_INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_index_name(name: str) -> str:
    """Index names become table names: letters, digits, '_', '-', '.', starting with a letter or digit."""
    if not _INDEX_NAME.match(name):
        raise ConfigError(
            f"invalid index name {name!r}: use up to 64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float  # cosine similarity (vector search) or BM25 (text search); higher is closer
    vector: npt.NDArray[np.float32] | None = None  # only when asked for (with_vectors)


# Fields that are columns of every index; any other filter field is a metadata key.
COLUMN_FIELDS = {"doc_id": "str", "source": "str", "title": "str", "chunk_no": "int"}


def check_vectors(chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32], dimension: int) -> None:
    """Every backend's upsert rule: one vector of the index's dimension per chunk."""
    if vectors.shape != (len(chunks), dimension):
        raise ValueError(f"expected vectors of shape ({len(chunks)}, {dimension}), got {vectors.shape}")


DELETE_GROUP = 2000  # chunks removed per atomic delete when many go (prune): whole documents per group


def document_groups(docs: dict[str, set[str]], limit: int = DELETE_GROUP) -> Iterator[set[str]]:
    """The chunk ids of ``docs`` (doc id -> its chunk ids) in groups of whole documents of about ``limit`` chunks
    (a larger document is a group of its own): a delete killed between groups never leaves a document half gone."""
    group: set[str] = set()
    for ids in docs.values():
        if group and len(group) + len(ids) > limit:
            yield group
            group = set()
        group |= ids
    if group:
        yield group


@dataclass(frozen=True)
class Staged:
    """``rows`` chunks staged, unseen before ``TableWriter.commit``; a kind per backend (StagedRows, lance_writer's)."""

    rows: int


@dataclass(frozen=True)
class StagedRows(Staged):  # chunks and vectors in memory until the commit (the in-process writers)
    chunks: tuple[Chunk, ...]
    vectors: npt.NDArray[np.float32]


class Stager(ABC):
    """A table's stage step as a picklable object for worker processes: writes a batch, returns what is committed."""

    @abstractmethod
    def __call__(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> Staged: ...


class TableWriter(ABC):
    """The write path of one indexing run: stage batches (here, or in workers through ``stager``), commit
    staged batches here (each commit atomic: a crash loses at most what is not committed), then finish.

    ``commit(batches, replaced)`` removes the chunk ids ``replaced`` (the old chunks of the documents whose new
    chunks the batches hold) in the same commit: a reader sees each of those documents wholly old or wholly
    new, and a process killed at any point leaves it so."""

    @abstractmethod
    def stage(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> Staged: ...

    def stager(self) -> Stager:
        """A picklable stage step for other processes; ConfigError where the backend writes only in-process."""
        raise ConfigError(
            f"{type(self).__name__} stages batches in this process only; distributed indexing "
            "(--engine ray) writes LanceDB indexes: unset NVRAG_STORE=faiss or use --engine local"
        )

    @abstractmethod
    def commit(self, batches: Sequence[Staged], replaced: Collection[str] = ()) -> None:
        """Make staged batches visible and remove the chunks ``replaced``, in one atomic commit."""

    def finish(self) -> None:  # noqa: B027 (a hook: in-process writers have nothing to finish)
        """End the run's writes (see rows committed from elsewhere)."""


class UpsertWriter(TableWriter):
    """The in-process writer: batches staged in memory, each commit one ``Table.upsert``."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def stage(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> Staged:
        check_vectors(chunks, vectors, self.table.manifest.dimension)
        return StagedRows(len(chunks), tuple(chunks), vectors)

    def commit(self, batches: Sequence[Staged], replaced: Collection[str] = ()) -> None:
        staged = [b for b in batches if isinstance(b, StagedRows)]
        assert len(staged) == len(batches), "a batch another writer staged"
        vectors = np.concatenate([b.vectors for b in staged]) if staged else np.zeros((0, 0), np.float32)
        self.table.replace([c for b in staged for c in b.chunks], vectors, replaced)


METADATA_SCAN_ROWS = 200_000  # metadata_fields reads at most this many chunks


class Table(ABC):
    """One index: its manifest, its chunks and their vectors."""

    def writer(self) -> TableWriter:
        """The write path of an indexing run (both engines use it; see TableWriter)."""
        return UpsertWriter(self)

    @property
    @abstractmethod
    def manifest(self) -> IndexManifest: ...

    @abstractmethod
    def set_manifest(self, manifest: IndexManifest) -> None:
        """Replace the stored manifest (same model and dimension; the caller enforces that)."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def chunk_ids_by_doc(self) -> dict[str, set[str]]:
        """Every stored chunk id, grouped by document id."""

    @abstractmethod
    def upsert(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> None:
        """Insert chunks with their vectors, replacing rows with the same chunk id, in one atomic commit."""

    @abstractmethod
    def delete(self, chunk_ids: Iterable[str]) -> None:
        """Remove these chunks, in one atomic commit (callers bound how many: ``DELETE_GROUP``)."""

    def replace(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32], replaced: Collection[str]) -> None:
        """Upsert ``chunks`` and remove the chunks ``replaced`` together. Backends whose storage allows it do
        both in one atomic commit (LanceDB, the SQLite sidecar); this default does one after the other."""
        if chunks:
            self.upsert(chunks, vectors)
        if replaced:
            self.delete(replaced)

    @abstractmethod
    def search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        where: Sequence[FilterCondition] = (),
        *,
        with_vectors: bool = False,
    ) -> list[ScoredChunk]:
        """The k chunks most similar to ``vector`` among those matching every condition, best first."""

    @abstractmethod
    def text_search(self, query: str, k: int, where: Sequence[FilterCondition] = ()) -> list[ScoredChunk]:
        """The k chunks that best match ``query`` by BM25 over their title and text, best first."""

    @abstractmethod
    def get(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        """The stored chunks with these ids, in the order given (missing ids are left out)."""

    @abstractmethod
    def indexed_at(self, chunk_ids: Iterable[str]) -> dict[str, datetime]:
        """When each of these chunks was written (UTC); left out: missing, or written before rows had a time."""

    def metadata_fields(self, max_rows: int = METADATA_SCAN_ROWS) -> set[str] | None:
        """The metadata keys any chunk has (top level), or None for an index of more than ``max_rows`` chunks
        (too costly to read for a message). Read in batches of whole chunks."""
        ids = sorted(c for chunk_ids in self.chunk_ids_by_doc().values() for c in chunk_ids)
        if len(ids) > max_rows:
            return None
        fields: set[str] = set()
        for i in range(0, len(ids), 1000):
            for chunk in self.get(ids[i : i + 1000]):
                fields.update(chunk.metadata)
        return fields

    @abstractmethod
    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """The stored vectors of these chunks (missing ids are left out)."""

    @abstractmethod
    def build_ann(self, kind: str, probe: ProbeQueries | None = None) -> str:
        """Build an approximate vector index ("auto", "ivf-rq", ...) or drop it ("none"); says what it did. Stores
        that tune searches by a recall probe search with ``probe``'s query-like vectors when given."""

    @abstractmethod
    def refresh_indexes(self) -> None:
        """Make the full-text index cover every row (build it, or fold new rows in), and any vector index too."""


class Store(ABC):
    """A data directory (or URI) of named indexes."""

    location: str = "the data directory"  # where the indexes live, for messages
    #: whether a table's writer can stage batches in other processes (``TableWriter.stager``)
    distributed_writes: bool = False

    def local_dir(self) -> Path | None:
        """The local directory this store keeps everything in (indexes, write locks, run reports, uploads), or
        None (an object store: no file to lock). An indexing run never reads it as documents."""
        return None

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """Hold index ``name``'s write lock for the block: one writer per index (IndexBusyError when another
        holds it; a lock of a killed process is taken over). Readers never wait for it."""
        folder = self.local_dir()
        if folder is None:
            yield
            return
        from nvrag.store.locking import exclusive

        with exclusive(folder / f"{name}.lock", name):
            writers: dict[str, int] = self.__dict__.setdefault("_writers", {})
            writers[name] = threading.get_ident()
            try:
                yield
            finally:
                writers.pop(name, None)

    def held_locks(self) -> set[str]:
        """The indexes this thread is writing through this store now (inside ``writing``)."""
        me = threading.get_ident()
        return {name for name, thread in self.__dict__.get("_writers", {}).items() if thread == me}

    @abstractmethod
    def list_indexes(self) -> list[str]: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def manifest(self, name: str) -> IndexManifest:
        """The index's manifest, without opening its table (cheap: for cache checks)."""

    @abstractmethod
    def open(self, name: str) -> Table:
        """Open an existing index; IndexNotFoundError when there is none of that name."""

    @abstractmethod
    def create(self, manifest: IndexManifest) -> Table:
        """Create an empty index described by ``manifest``; ConfigError if the name is taken."""

    @abstractmethod
    def drop(self, name: str) -> None: ...

    @abstractmethod
    def open_staging(self, name: str) -> Table | None:
        """The unfinished rebuild of ``name`` (see create_staging), if there is one."""

    @abstractmethod
    def create_staging(self, manifest: IndexManifest) -> Table:
        """Start rebuilding an existing index beside it (new model or chunker); the live index is untouched."""

    @abstractmethod
    def publish_staging(self, name: str) -> Table:
        """Make the finished rebuild the index, in one manifest commit, then drop the old rows."""


STAGING = "#staging"  # manifest key suffix of a rebuild; "#" never occurs in an index name


class ManifestStore(Store):
    """The manifest bookkeeping every backend shares: names, opening, creating, dropping, staged rebuilds.

    A backend supplies the primitives: reading and writing manifest rows (keyed by index name, or name +
    STAGING for a rebuild), opening a manifest's physical table, and dropping one.
    """

    location: str = ""

    @abstractmethod
    def _manifest_rows(self) -> dict[str, str]:
        """Every stored manifest as JSON, keyed by index name (or name + STAGING), as written (any version)."""

    def _read(self, key: str) -> IndexManifest | None:
        payload = self._manifest_rows().get(key)
        return None if payload is None else read_manifest(payload, key)

    @abstractmethod
    def _write_manifest(self, manifest: IndexManifest, key: str | None = None) -> None: ...

    @abstractmethod
    def _delete_manifests(self, keys: Sequence[str]) -> None: ...

    @abstractmethod
    def _open_table(self, manifest: IndexManifest, key: str) -> Table: ...

    @abstractmethod
    def _drop_physical(self, manifest: IndexManifest) -> None: ...

    def _check_new(self, manifest: IndexManifest) -> None:
        """Backend-specific reasons a new index cannot be created (raise ConfigError)."""

    def _switch(self, name: str, staged: IndexManifest) -> None:
        """Make ``staged`` the manifest of ``name`` and forget the staging row (one commit where possible)."""
        self._write_manifest(staged, name)
        self._delete_manifests([name + STAGING])

    def list_indexes(self) -> list[str]:
        return sorted(name for name in self._manifest_rows() if STAGING not in name)

    def exists(self, name: str) -> bool:
        return STAGING not in name and name in self._manifest_rows()

    def manifest(self, name: str) -> IndexManifest:
        found = self._read(name) if STAGING not in name else None
        if found is None:
            known = ", ".join(self.list_indexes()) or "none yet"
            raise IndexNotFoundError(f"no index named {name!r} in {self.location} (indexes: {known})")
        return found

    def open(self, name: str) -> Table:
        return self._open_table(self.manifest(name), name)

    def create(self, manifest: IndexManifest) -> Table:
        check_index_name(manifest.name)
        if self.exists(manifest.name):
            raise ConfigError(f"an index named {manifest.name!r} already exists in {self.location}")
        self._check_new(manifest)
        self._write_manifest(manifest)
        return self.open(manifest.name)

    def drop(self, name: str) -> None:
        live = self.manifest(name)
        staging = self.open_staging(name)
        if staging is not None:
            self._drop_physical(staging.manifest)
        self._drop_physical(live)
        self._delete_manifests([name, name + STAGING])

    def open_staging(self, name: str) -> Table | None:
        staged = self._read(name + STAGING)
        if staged is None:
            return None
        live = self._read(name)
        if live is not None and live.table == staged.table:
            # a rebuild that was switched in but whose staging row outlived a crash: forget the row only
            self._delete_manifests([name + STAGING])
            return None
        return self._open_table(staged, name + STAGING)

    def create_staging(self, manifest: IndexManifest) -> Table:
        live = self.manifest(manifest.name)
        old = self.open_staging(manifest.name)
        if old is not None:  # an abandoned rebuild of other settings: start over
            self._drop_physical(old.manifest)
        # "_" cannot start an index name, so this physical name never collides with an index
        suffix = hashlib.sha256(f"{manifest.created_at}{manifest.model_revision}".encode()).hexdigest()[:8]
        physical = f"_{manifest.name}__{suffix}"
        if physical == live.table:
            physical += "b"
        staged = replace(manifest, table=physical)
        self._write_manifest(staged, manifest.name + STAGING)
        return self._open_table(staged, manifest.name + STAGING)

    def publish_staging(self, name: str) -> Table:
        staged = self.open_staging(name)
        if staged is None:
            raise IndexNotFoundError(f"index {name!r} has no rebuild in progress")
        old = self.manifest(name)
        self._switch(name, staged.manifest)
        if old.table != staged.manifest.table:
            self._drop_physical(old)
        return self.open(name)
