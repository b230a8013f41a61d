"""LanceDB, embedded: one table per index, plus one small table holding every index's manifest.

Cosine is set explicitly on every search (LanceDB's default metric is L2). Writes use merge_insert on
chunk_id, so each batch is one atomic commit and re-adding a chunk never duplicates it.

Reads (listing, counts, vector and full-text search, lookups) and writes (lance_ops, lance_writer) go to the
tables' Lance datasets through pylance, the format library LanceDB stores them in: the same engine, but importing
it costs a quarter of lancedb's import (0.4 s against 1.7 s, most of that lancedb's namespace client), so `nvrag
info`, a cold `nvrag search` and `nvrag index` never load lancedb. Vector-index builds open the LanceDB table.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import lance
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from nvrag.errors import ConfigError, FilterError
from nvrag.schema import CHUNK_COLUMNS, Chunk, FilterCondition, IndexManifest
from nvrag.store import lance_ann, lance_ops
from nvrag.store.base import METADATA_SCAN_ROWS, ManifestStore, ScoredChunk, Table, TableWriter
from nvrag.store.lance_ann import ANN_KINDS, ANN_MIN_ROWS, ann_partitions
from nvrag.store.lance_schema import INDEXED_AT, chunk_schema, committed, sign_bits
from nvrag.store.lance_sql import quote, where_sql
from nvrag.store.lance_writer import LanceWriter
from nvrag.store.probes import ProbeQueries

# Index names cannot start with "_" (check_index_name), so this table never collides with one.
MANIFEST_TABLE = "_nvrag_manifests"
_MANIFEST_SCHEMA = pa.schema([pa.field("name", pa.string()), pa.field("manifest", pa.string())])


ANN_NPROBES = 20
ANN_REFINE = 20
ANN_EF = 100
BINARY_CANDIDATES = 20  # binary search: Hamming candidates per requested hit, rescored with the full vectors
BINARY_MIN_CANDIDATES = 200
_RESULT_COLUMNS = list(CHUNK_COLUMNS)
_TEXT_COLUMNS = ["title", "text"]
_SUFFIX = ".lance"  # LanceDB's directory for a table


def ann_nprobes(rows: int, hnsw: bool = False) -> int:
    """Partitions a search probes: ANN_NPROBES, or a tenth of the partitions when that is more (large tables)."""
    return max(ANN_NPROBES, ann_partitions(rows, hnsw) // 10)


def _scored(rows: list[dict[str, Any]], score: Any, with_vectors: bool = False) -> list[ScoredChunk]:
    return [
        ScoredChunk(
            chunk=Chunk.from_row(r),
            score=score(r),
            vector=np.asarray(r["vector"], dtype=np.float32) if with_vectors else None,
        )
        for r in rows
    ]


class LanceTable(Table):
    probes_recall = True  # build_ann tunes its searches by a recall probe (retriever/probing.py gives it queries)

    def __init__(self, store: LanceStore, manifest: IndexManifest, key: str | None = None) -> None:
        self._store = store
        self._manifest = manifest
        self._name = manifest.table  # the physical table (LanceDB's name for it)
        self.uri = store.dataset_uri(self._name)  # its Lance dataset
        self._key = key or manifest.name  # the manifest's row: the index name, or name#staging
        self._read: Any = None  # the Lance dataset reads go to; reopened after this process writes

    @property
    def manifest(self) -> IndexManifest:
        return self._manifest

    def set_manifest(self, manifest: IndexManifest) -> None:
        self._store._write_manifest(manifest, self._key)
        self._manifest = manifest

    @property
    def dataset(self) -> Any:
        """The Lance dataset as last read (reopened after a write here: ``changed``)."""
        if self._read is None:
            self._read = lance.dataset(self.uri)
        return self._read

    @property
    def lancedb_table(self) -> Any:
        """The LanceDB table at its latest version, for vector-index builds (which call changed() when done);
        opened at each use, since writes (lance_ops) go around it."""
        return self._store._db.open_table(self._name)

    def changed(self) -> None:
        """Something in this process wrote to the dataset: the next read opens its latest version."""
        self._read = None

    def count(self) -> int:
        return int(self.dataset.count_rows())

    def writer(self) -> TableWriter:
        return LanceWriter(self)

    def chunk_ids_by_doc(self) -> dict[str, set[str]]:
        rows = self.dataset.to_table(columns=["chunk_id", "doc_id"])
        grouped: dict[str, set[str]] = {}
        for chunk_id, doc_id in zip(rows["chunk_id"].to_pylist(), rows["doc_id"].to_pylist(), strict=True):
            grouped.setdefault(doc_id, set()).add(chunk_id)
        return grouped

    def upsert(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> None:
        if chunks:
            writer = self.writer()
            writer.commit([writer.stage(chunks, vectors)])

    def delete(self, chunk_ids: Iterable[str]) -> None:
        ids = sorted(set(chunk_ids))
        if ids:  # one commit: callers group many deletes by whole documents (base.document_groups)
            lance_ops.delete(self.uri, f"chunk_id IN ({', '.join(quote(x) for x in ids)})")
        self.changed()

    def search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        where: Sequence[FilterCondition] = (),
        *,
        with_vectors: bool = False,
        nprobes: int = 0,  # partitions an ANN search probes; 0: what the build's recall probe chose
        refine: int = 0,  # candidates per hit re-ranked with the full vectors; 0: likewise
    ) -> list[ScoredChunk]:
        rows = self.count() if k > 0 else 0
        if rows == 0:
            return []
        if self._manifest.quantization == "binary":
            return self._binary_search(vector, k, where, with_vectors, rows)
        nearest: dict[str, Any] = {
            "column": "vector",
            "q": np.asarray(vector, dtype=np.float32).reshape(-1),
            "k": k,
            "metric": "cosine",
        }
        ann = self._ann_kind()
        if ann is not None:
            # probe widely and re-rank candidates with the full vectors: recall close to exact search
            hnsw = "HNSW" in ann.upper()
            probes = nprobes or self._manifest.ann_nprobes or ann_nprobes(rows, hnsw)
            nearest.update(nprobes=probes, refine_factor=refine or self._manifest.ann_refine or ANN_REFINE)
            if hnsw:
                nearest["ef"] = max(ANN_EF, k * ANN_REFINE)
        columns = [*_RESULT_COLUMNS, *(["vector"] if with_vectors else []), "_distance"]
        # Lance's cosine distance is 1 - cosine similarity
        return _scored(self._run(columns, where, nearest=nearest), lambda r: 1.0 - float(r["_distance"]), with_vectors)

    def _binary_search(
        self, vector: npt.NDArray[np.float32], k: int, where: Sequence[FilterCondition], with_vectors: bool, rows: int
    ) -> list[ScoredChunk]:
        """Hamming distance over the sign bits finds candidates; their full vectors rescore them exactly."""
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        wanted = max(BINARY_MIN_CANDIDATES, k * BINARY_CANDIDATES)
        nearest: dict[str, Any] = {"column": "bits", "q": sign_bits(q), "k": wanted, "metric": "hamming"}
        if self._bits_indexed():
            nearest["nprobes"] = ann_nprobes(rows)
        candidates = self._run([*_RESULT_COLUMNS, "vector", "_distance"], where, nearest=nearest)
        if not candidates:
            return []
        full = np.asarray([r["vector"] for r in candidates], dtype=np.float32)
        scores = full @ q
        order = np.argsort(-scores, kind="stable")[:k]
        best = [candidates[i] for i in order]
        by_id = {r["chunk_id"]: float(s) for r, s in zip(candidates, scores, strict=True)}
        return _scored(best, lambda r: by_id[r["chunk_id"]], with_vectors)

    def _indices(self) -> list[tuple[str, list[str]]]:
        """The dataset's indexes: (type, such as IVF_PQ, IVF_HNSW_SQ, IVF_FLAT or Inverted; the columns)."""
        return [(str(d.index_type), list(d.field_names)) for d in self.dataset.describe_indices()]

    def _bits_indexed(self) -> bool:
        return any("bits" in fields for _, fields in self._indices())

    def text_search(self, query: str, k: int, where: Sequence[FilterCondition] = ()) -> list[ScoredChunk]:
        if k <= 0 or not query.strip() or self.count() == 0:
            return []
        # without a full-text index (writers build it: refresh_indexes) Lance scores a flat scan; a read
        # never writes one, which would race the index's writer
        search = {"query": query, "columns": _TEXT_COLUMNS}
        rows = self._run([*_RESULT_COLUMNS, "_score"], where, full_text_query=search, limit=k)
        return _scored(rows, lambda r: float(r["_score"]))

    def _run(self, columns: list[str], where: Sequence[FilterCondition], **scan: Any) -> list[dict[str, Any]]:
        """One scan of the dataset (a nearest-neighbour or full-text query in ``scan``), filtered before it ranks."""
        predicate = where_sql(where)
        try:
            rows: list[dict[str, Any]] = self.dataset.to_table(
                columns=columns, filter=predicate, prefilter=predicate is not None, **scan
            ).to_pylist()
        except Exception as exc:  # DataFusion reports bad predicates as generic errors
            if predicate is None:
                raise
            raise FilterError(f"the filter cannot be applied to this index ({str(exc).splitlines()[0][:200]})") from exc
        return rows

    def _by_ids(self, columns: list[str], chunk_ids: Iterable[str]) -> Iterator[dict[str, Any]]:
        ids = sorted(set(chunk_ids))
        for i in range(0, len(ids), 500):
            part = ", ".join(quote(x) for x in ids[i : i + 500])
            yield from self.dataset.to_table(columns=columns, filter=f"chunk_id IN ({part})").to_pylist()

    def get(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        found = {c.chunk_id: c for c in map(Chunk.from_row, self._by_ids(_RESULT_COLUMNS, chunk_ids))}
        return [found[x] for x in chunk_ids if x in found]

    def indexed_at(self, chunk_ids: Iterable[str]) -> dict[str, datetime]:
        if INDEXED_AT not in self.dataset.schema.names:  # written before rows recorded their time
            return {}
        rows = self._by_ids(["chunk_id", INDEXED_AT], chunk_ids)
        return {r["chunk_id"]: r[INDEXED_AT] for r in rows if r[INDEXED_AT] is not None}

    def metadata_fields(self, max_rows: int = METADATA_SCAN_ROWS) -> set[str] | None:
        if self.count() > max_rows:
            return None
        batches = self.dataset.to_batches(columns=["metadata"])  # one column, streamed
        values = (json.loads(text or "{}") for batch in batches for text in batch.column(0).to_pylist())
        return {key for value in values if isinstance(value, dict) for key in value}

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        rows = self._by_ids(["chunk_id", "vector"], chunk_ids)
        return {r["chunk_id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}

    def _ann_kind(self) -> str | None:
        return next((kind for kind, fields in self._indices() if "vector" in fields and kind != "Inverted"), None)

    def build_ann(self, kind: str, probe: ProbeQueries | None = None) -> str:
        try:
            return self._build_ann(kind, probe)
        finally:
            self.changed()

    def _build_ann(self, kind: str, probe: ProbeQueries | None) -> str:
        rows, manifest = self.count(), self._manifest
        if kind == "none":
            lance_ops.drop_indexes(self.uri, {"vector", "bits"})
            self.set_manifest(replace(manifest, ann_nprobes=0, ann_recall=None, ann_refine=0))
            binary = " (over the sign bits, rescored)" if manifest.quantization == "binary" else ""
            return f"vector index dropped: searches are exact{binary}"
        if kind not in ANN_KINDS:
            raise ConfigError(f"unknown ANN kind {kind!r}; use auto, ivf-rq, ivf-pq, hnsw or none")
        if rows < ANN_MIN_ROWS:
            return f"{rows} rows: below {ANN_MIN_ROWS}, exact search is fast and exact; no vector index built"
        built, partitions = lance_ann.build(self, kind, rows)
        if manifest.quantization == "binary":
            return built
        self.changed()
        start = max(1, ann_nprobes(rows, kind == "hnsw") // 2)
        found = lance_ann.probe(self, partitions, start, probe)
        recall = round(found.recall, 4)
        self.set_manifest(replace(manifest, ann_nprobes=found.nprobes, ann_recall=recall, ann_refine=found.refine))
        probes = (
            f"{len(probe.vectors)} query-like probes (spans of its chunks, embedded as queries)"
            if probe is not None
            else f"{min(lance_ann.PROBE_QUERIES, rows)} of its own vectors"
        )
        return (
            f"{built}; searches probe {found.nprobes} partitions and re-rank {found.refine} candidates per hit: "
            f"recall@10 {found.recall:.3f}, measured with {probes} against exact search"
        )

    def refresh_indexes(self) -> None:
        if self.count() == 0:
            return
        kinds = {kind for kind, _ in self._indices()}
        if "Inverted" not in kinds:
            lance_ops.index_text(self.uri, _TEXT_COLUMNS)
        if kinds:  # full-text, vector or bits indexes built before: fold the rows added since into them
            lance_ops.optimize(self.uri)
        self.changed()


class LanceStore(ManifestStore):
    """Indexes in an embedded LanceDB database at ``uri`` (a local directory or an object-store URI)."""

    distributed_writes = True  # workers write Lance fragments; the driver commits them (lance_writer)

    def __init__(self, uri: str) -> None:
        self.uri = self.location = uri
        self._connection: Any = None

    @property
    def _db(self) -> Any:
        """The LanceDB connection, for vector-index builds and an object store's table list (lance_ops writes)."""
        if self._connection is None:
            import lancedb

            self._connection = lancedb.connect(self.uri)
        return self._connection

    def _local(self) -> Path | None:
        return None if "://" in self.uri else Path(self.uri).expanduser()

    def dataset_uri(self, name: str) -> str:
        """Where LanceDB keeps the table ``name``: the directory ``name.lance`` in the database."""
        local = self._local()
        return str(local / f"{name}{_SUFFIX}") if local is not None else f"{self.uri.rstrip('/')}/{name}{_SUFFIX}"

    def local_dir(self) -> Path | None:
        return self._local()

    def _manifest_section(self) -> Any:
        """Writers of different indexes share the manifest table: their updates take turns (no commit conflict)."""
        folder = self.local_dir()
        if folder is None:
            return contextlib.nullcontext()
        from nvrag.store.locking import shared_section

        return shared_section(folder / f"{MANIFEST_TABLE}.lock")

    def _tables(self) -> set[str]:
        local = self._local()
        if local is not None:  # what LanceDB lists for a directory: its name.lance entries with a version
            if not local.is_dir():
                return set()
            return {p.name.removesuffix(_SUFFIX) for p in local.iterdir() if p.name.endswith(_SUFFIX) and committed(p)}
        names: list[str] = []
        page_token = None
        while True:
            response = self._db.list_tables(page_token=page_token)
            names.extend(response.tables)
            page_token = response.page_token
            if not page_token:
                return set(names)

    def _manifest_rows(self) -> dict[str, str]:
        if MANIFEST_TABLE not in self._tables():
            return {}
        try:
            table = lance.dataset(self.dataset_uri(MANIFEST_TABLE)).to_table()
        except ValueError:
            # listed but not committed yet (an object store's listing: a local one lists committed tables only):
            # another process is creating the database's first index right now
            return {}
        return {r["name"]: r["manifest"] for r in table.to_pylist()}

    def _write_manifest(self, manifest: IndexManifest, key: str | None = None) -> None:
        row = pa.table({"name": [key or manifest.name], "manifest": [manifest.to_json()]}, schema=_MANIFEST_SCHEMA)
        with self._manifest_section():
            uri = self.dataset_uri(MANIFEST_TABLE)
            if MANIFEST_TABLE not in self._tables():
                lance_ops.create(uri, _MANIFEST_SCHEMA)
            lance_ops.merge(uri, "name", row)

    def _delete_manifests(self, keys: Sequence[str]) -> None:
        with self._manifest_section():
            if MANIFEST_TABLE in self._tables():
                lance_ops.delete(self.dataset_uri(MANIFEST_TABLE), f"name IN ({', '.join(quote(k) for k in keys)})")

    def _open_table(self, manifest: IndexManifest, key: str) -> LanceTable:
        physical = manifest.table
        if physical not in self._tables():  # the manifest is written first: a crash in between left no table
            schema = chunk_schema(manifest.dimension, manifest.vector_dtype, manifest.quantization)
            # a reader opening the index as its writer creates it: whichever is second finds the table
            lance_ops.create(self.dataset_uri(physical), schema)
        return LanceTable(self, manifest, key)

    def _drop_physical(self, manifest: IndexManifest) -> None:
        physical = manifest.table
        if physical in self._tables():
            lance_ops.drop(self.dataset_uri(physical))

    def _check_new(self, manifest: IndexManifest) -> None:
        if manifest.name in self._tables():
            raise ConfigError(
                f"{self.uri} holds a table {manifest.name!r} that nvrag did not create; choose another index name"
            )
