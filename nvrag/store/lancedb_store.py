"""LanceDB, embedded: one table per index, plus one small table holding every index's manifest.

Cosine is set explicitly on every search (LanceDB's default metric is L2). Writes use merge_insert on
chunk_id, so each batch is one atomic commit and re-adding a chunk never duplicates it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from nvrag.errors import ConfigError, IndexNotFoundError
from nvrag.schema import Chunk, IndexManifest
from nvrag.store.base import ScoredChunk, Store, Table, check_index_name

# Index names cannot start with "_" (check_index_name), so this table never collides with one.
MANIFEST_TABLE = "_nvrag_manifests"
_MANIFEST_SCHEMA = pa.schema([pa.field("name", pa.string()), pa.field("manifest", pa.string())])


def chunk_schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("chunk_no", pa.int32()),
            pa.field("title", pa.string()),
            pa.field("text", pa.string()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
            pa.field("metadata", pa.string()),  # JSON object
            pa.field("vector", pa.list_(pa.float32(), dimension)),
        ]
    )


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceTable(Table):
    def __init__(self, store: LanceStore, manifest: IndexManifest, table: Any) -> None:
        self._store = store
        self._manifest = manifest
        self._table = table

    @property
    def manifest(self) -> IndexManifest:
        return self._manifest

    def set_manifest(self, manifest: IndexManifest) -> None:
        self._store._write_manifest(manifest)
        self._manifest = manifest

    def count(self) -> int:
        return int(self._table.count_rows())

    def chunk_ids_by_doc(self) -> dict[str, set[str]]:
        rows = self._table.search().select(["chunk_id", "doc_id"]).limit(None).to_arrow()
        grouped: dict[str, set[str]] = {}
        for chunk_id, doc_id in zip(rows["chunk_id"].to_pylist(), rows["doc_id"].to_pylist(), strict=True):
            grouped.setdefault(doc_id, set()).add(chunk_id)
        return grouped

    def upsert(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> None:
        if not chunks:
            return
        dim = self._manifest.dimension
        if vectors.shape != (len(chunks), dim):
            raise ValueError(f"expected vectors of shape ({len(chunks)}, {dim}), got {vectors.shape}")
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        data = pa.table(
            {
                "chunk_id": [c.chunk_id for c in chunks],
                "doc_id": [c.doc_id for c in chunks],
                "source": [c.source for c in chunks],
                "chunk_no": pa.array([c.chunk_no for c in chunks], pa.int32()),
                "title": pa.array([c.title for c in chunks], pa.string()),
                "text": [c.text for c in chunks],
                "start": pa.array([c.start for c in chunks], pa.int64()),
                "end": pa.array([c.end for c in chunks], pa.int64()),
                "metadata": [json.dumps(c.metadata, sort_keys=True) for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            },
            schema=chunk_schema(dim),
        )
        (self._table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(data))

    def delete(self, chunk_ids: Iterable[str]) -> None:
        ids = sorted(set(chunk_ids))
        for i in range(0, len(ids), 500):
            part = ", ".join(_quote(x) for x in ids[i : i + 500])
            self._table.delete(f"chunk_id IN ({part})")

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[ScoredChunk]:
        if k <= 0 or self.count() == 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        rows = (
            self._table.search(query, vector_column_name="vector")
            .distance_type("cosine")
            .limit(k)
            .select(
                ["chunk_id", "doc_id", "source", "chunk_no", "title", "text", "start", "end", "metadata", "_distance"]
            )
            .to_list()
        )
        return [
            ScoredChunk(
                chunk=Chunk(
                    chunk_id=r["chunk_id"],
                    doc_id=r["doc_id"],
                    source=r["source"],
                    chunk_no=int(r["chunk_no"]),
                    text=r["text"],
                    start=int(r["start"]),
                    end=int(r["end"]),
                    title=r["title"],
                    metadata=json.loads(r["metadata"] or "{}"),
                ),
                score=1.0 - float(r["_distance"]),  # LanceDB's cosine distance is 1 - cosine similarity
            )
            for r in rows
        ]


class LanceStore(Store):
    """Indexes in an embedded LanceDB database at ``uri`` (a local directory or an object-store URI)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._db = lancedb.connect(uri)

    def _tables(self) -> set[str]:
        names: list[str] = []
        page_token = None
        while True:
            response = self._db.list_tables(page_token=page_token)
            names.extend(response.tables)
            page_token = response.page_token
            if not page_token:
                return set(names)

    def _manifests(self) -> dict[str, IndexManifest]:
        if MANIFEST_TABLE not in self._tables():
            return {}
        rows = self._db.open_table(MANIFEST_TABLE).to_arrow().to_pylist()
        return {r["name"]: IndexManifest.from_json(r["manifest"]) for r in rows}

    def _write_manifest(self, manifest: IndexManifest) -> None:
        row = pa.table({"name": [manifest.name], "manifest": [manifest.to_json()]}, schema=_MANIFEST_SCHEMA)
        if MANIFEST_TABLE not in self._tables():
            self._db.create_table(MANIFEST_TABLE, schema=_MANIFEST_SCHEMA, exist_ok=True)
        table = self._db.open_table(MANIFEST_TABLE)
        table.merge_insert("name").when_matched_update_all().when_not_matched_insert_all().execute(row)

    def list_indexes(self) -> list[str]:
        return sorted(self._manifests())

    def exists(self, name: str) -> bool:
        return name in self._manifests()

    def open(self, name: str) -> LanceTable:
        manifest = self._manifests().get(name)
        if manifest is None:
            known = ", ".join(self.list_indexes()) or "none yet"
            raise IndexNotFoundError(f"no index named {name!r} in {self.uri} (indexes: {known})")
        # The manifest is written before the table is created, so a crash in between leaves a manifest
        # with no table: create the empty table now rather than fail.
        table = self._db.create_table(name, schema=chunk_schema(manifest.dimension), exist_ok=True)
        return LanceTable(self, manifest, table)

    def create(self, manifest: IndexManifest) -> LanceTable:
        check_index_name(manifest.name)
        if self.exists(manifest.name):
            raise ConfigError(f"an index named {manifest.name!r} already exists in {self.uri}")
        if manifest.name in self._tables():
            raise ConfigError(
                f"{self.uri} holds a table {manifest.name!r} that nvrag did not create; choose another index name"
            )
        self._write_manifest(manifest)
        return self.open(manifest.name)

    def drop(self, name: str) -> None:
        if not self.exists(name):
            raise IndexNotFoundError(f"no index named {name!r} in {self.uri}")
        if name in self._tables():
            self._db.drop_table(name)
        self._db.open_table(MANIFEST_TABLE).delete(f"name = {_quote(name)}")
