"""The LanceDB write path of an indexing run.

In this process a staged batch is an Arrow table and its commit one merge_insert on chunk_id (re-adding a chunk
never duplicates it). In worker processes (the Ray engine), ``LanceFragmentStager`` writes each batch as Lance
fragment files of the index's dataset; nothing reads them until the driver commits their metadata as one Lance
transaction: an append, or, when the batches replace documents' old chunks, an update that adds the fragments
and deletes those chunks together. A crash loses at most the batches not committed: their files are
unreferenced and ignored.

Every write here goes through pylance, as the store's reads do (importing lancedb costs 1.3 s more).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import lance
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from lance.fragment import FragmentMetadata

from nvrag.schema import Chunk, IndexManifest
from nvrag.store import lance_ops
from nvrag.store.base import Staged, Stager, TableWriter, check_vectors
from nvrag.store.lance_schema import add_indexed_at, chunk_schema, chunk_table
from nvrag.store.lance_sql import quote


class WrittenTable(Protocol):
    """What the writer needs of the table it writes (lancedb_store.LanceTable): its manifest and dataset URI,
    to be told it changed, and its atomic delete. The store module imports this one, never the other way."""

    @property
    def manifest(self) -> IndexManifest: ...

    @property
    def uri(self) -> str: ...

    def changed(self) -> None: ...

    def delete(self, chunk_ids: Iterable[str]) -> None: ...


@dataclass(frozen=True)
class StagedTable(Staged):
    """A batch as the Arrow table of its rows, in this process (merged in at the commit)."""

    table: pa.Table


@dataclass(frozen=True)
class StagedFragments(Staged):
    """A batch a worker wrote as fragments of the dataset, as Lance's own JSON metadata (data, not pickled
    objects: the commit reads it with ``FragmentMetadata.from_json``)."""

    fragments: tuple[str, ...]


class LanceFragmentStager(Stager):
    """Writes a batch as fragments of the dataset at ``uri`` (picklable: it carries only plain values); the
    fragments' metadata travels back as Lance's JSON, data rather than pickled objects."""

    def __init__(self, uri: str, dimension: int, vector_dtype: str, quantization: str, storage_version: str) -> None:
        self.uri, self.dimension = uri, dimension
        self.vector_dtype, self.quantization, self.storage_version = vector_dtype, quantization, storage_version

    def __call__(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> StagedFragments:
        if not chunks:
            return StagedFragments(0, ())
        check_vectors(chunks, vectors, self.dimension)
        data = chunk_table(chunks, vectors, self.dimension, self.vector_dtype, self.quantization)
        fragments = lance.fragment.write_fragments(
            data,
            self.uri,
            schema=chunk_schema(self.dimension, self.vector_dtype, self.quantization),
            data_storage_version=self.storage_version,
        )
        return StagedFragments(len(chunks), tuple(json.dumps(f.to_json()) for f in fragments))


def _replacing(dataset: Any, fragments: list[Any], old: str) -> Any:
    """One Lance transaction that adds ``fragments`` and deletes the rows ``old`` selects: the new fragments,
    the deletion files of the fragments holding those rows (written now, unseen until the commit), and the
    fragments left empty dropped. A reader sees the documents wholly old or wholly new."""
    addresses = dataset.to_table(columns=[], filter=old, with_row_address=True).column("_rowaddr").to_pylist()
    updated, removed = [], []
    for fragment_id in sorted({address >> 32 for address in addresses}):
        kept = dataset.get_fragment(fragment_id).delete(old)
        if kept is None:
            removed.append(fragment_id)
        else:
            updated.append(kept)
    return lance.LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated, new_fragments=fragments)


class LanceWriter(TableWriter):
    def __init__(self, table: WrittenTable) -> None:
        self.table = table
        add_indexed_at(lance.dataset(table.uri))  # (writers hold the index's write lock)

    def stage(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> StagedTable:
        m = self.table.manifest
        check_vectors(chunks, vectors, m.dimension)
        return StagedTable(len(chunks), chunk_table(chunks, vectors, m.dimension, m.vector_dtype, m.quantization))

    def stager(self) -> LanceFragmentStager:
        m = self.table.manifest
        uri = self.table.uri
        storage = str(lance.dataset(uri).data_storage_version)
        return LanceFragmentStager(uri, m.dimension, m.vector_dtype, m.quantization, storage)

    def commit(self, batches: Sequence[Staged], replaced: Collection[str] = ()) -> None:
        for batch in batches:
            if not isinstance(batch, StagedTable | StagedFragments):
                raise TypeError(f"a {type(batch).__name__} batch committed to a Lance writer")
        tables = [b.table for b in batches if isinstance(b, StagedTable) and b.rows]
        fragments = [
            FragmentMetadata.from_json(f) for b in batches if isinstance(b, StagedFragments) for f in b.fragments
        ]
        old = f"chunk_id IN ({', '.join(quote(x) for x in sorted(replaced))})" if replaced else None
        if tables:
            # the documents' old chunks (``old``) go in the same commit as their new ones
            lance_ops.merge(self.table.uri, "chunk_id", pa.concat_tables(tables), delete_where=old)
            self.table.changed()
        elif old is not None and not fragments:
            self.table.delete(replaced)
        if fragments:
            uri = self.table.uri
            latest = lance.dataset(uri)  # (this writer holds the index's lock: every version since is its own)
            append = lance.LanceOperation.Append(fragments)
            operation = _replacing(latest, fragments, old) if old is not None else append
            lance.LanceDataset.commit(uri, operation, read_version=latest.version)
            self.table.changed()
