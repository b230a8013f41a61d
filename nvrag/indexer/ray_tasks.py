"""What the Ray engine's workers run (ray_engine.py drives them): stage 1, a task that loads and chunks a batch
of load units into rows; stage 2, an actor that embeds a batch of chunks and stages it with the table writer's
stager. Everything here travels to other processes by reference: module-level functions and classes."""

from __future__ import annotations

import functools
import pickle
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nvrag.embedder import Embedder
from nvrag.embedder.registry import ModelRecipe
from nvrag.errors import NvRagError
from nvrag.indexer.chunking import chunk_document
from nvrag.indexer.engine import embedding_text
from nvrag.indexer.formats import TableColumns
from nvrag.indexer.loaders import LoadFailure, LoadUnit, load_unit
from nvrag.schema import Chunk, ChunkerSettings
from nvrag.store.base import Stager

UNITS_PER_TASK = 16  # files per load task (a directory of small files)

# one row per chunk (its Chunk.to_row columns), per failure (``failure`` set) or per empty document (no chunk_id)
_INT = {
    "unit_no": pa.int64(),
    "item_no": pa.int64(),
    "chunk_no": pa.int32(),
    "start": pa.int64(),
    "end": pa.int64(),
}
_ORDER = ("unit_no", "item_no", "source", "failure", "doc_id", "chunk_id", "chunk_no", "title", "text", "start", "end")
CHUNK_ROWS = pa.schema([(n, _INT.get(n, pa.string())) for n in (*_ORDER, "metadata")])
LEDGER_COLUMNS = ["unit_no", "item_no", "chunk_no", "source", "failure", "doc_id", "chunk_id"]


@functools.lru_cache(maxsize=4)
def chunker_embedder(recipe: ModelRecipe) -> Embedder:
    """A worker process's tokenizer for chunking (the embedders load their weights only when they embed)."""
    return recipe.load(gpu=False)


def rows_for_units(
    batch: dict[str, Any], recipe: ModelRecipe, settings: ChunkerSettings, key: str, columns: TableColumns
) -> pa.Table:
    """Stage 1: load and chunk a batch of units (a Ray Data task)."""
    embedder = chunker_embedder(recipe)
    rows: dict[str, list[Any]] = {name: [] for name in CHUNK_ROWS.names}

    def add(**values: Any) -> None:
        for name in CHUNK_ROWS.names:
            rows[name].append(values.get(name))

    for unit_no, blob in zip(batch["unit_no"], batch["unit"], strict=True):
        unit: LoadUnit = pickle.loads(blob)
        for item_no, item in enumerate(load_unit(unit, columns)):
            where = {"unit_no": int(unit_no), "item_no": item_no, "source": item.source}
            if isinstance(item, LoadFailure):
                add(**where, failure=item.reason, doc_id=item.doc_id)
                continue
            try:
                chunks = chunk_document(item, embedder.token_spans, settings, key)
            except ValueError as exc:  # a chunk over the size limit
                add(**where, failure=str(exc), doc_id=item.doc_id)
                continue
            if not chunks:
                add(**where, doc_id=item.doc_id)
            for c in chunks:
                add(**{**where, **c.to_row()})
    return pa.table(rows, schema=CHUNK_ROWS)


def keep_fresh(batch: pa.Table, fresh: pa.Array) -> pa.Table:
    return batch.filter(pc.fill_null(pc.is_in(batch.column("chunk_id"), value_set=fresh), False))


class EmbedStager:
    """Stage 2, an actor: embeds a batch of chunks and stages it with the table writer's stager."""

    def __init__(self, recipe: ModelRecipe, gpu: bool, stager: Stager, separator: str) -> None:
        self.embedder = recipe.load(gpu=gpu)
        self.stager, self.separator = stager, separator

    def __call__(self, batch: pa.Table) -> pa.Table:
        chunks = [Chunk.from_row(r) for r in batch.to_pylist()]
        if not chunks:
            return pa.table({"staged": pa.array([], pa.binary())})
        try:
            vectors = self.embedder.embed_documents([embedding_text(c, self.separator) for c in chunks])
            staged: object = self.stager(chunks, vectors)
        except NvRagError as exc:
            # Ray wraps a task's exception in its own and pickling drops the chain, so the domain error
            # travels as data: the driver raises it as the local engine would
            staged = exc
        counts = Counter(c.doc_id for c in chunks)  # the driver commits whole documents (WholeDocuments)
        return pa.table({"staged": pa.array([pickle.dumps((staged, counts))], pa.binary())})
