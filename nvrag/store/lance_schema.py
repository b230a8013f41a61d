"""The layout of an index table in Lance: its Arrow schema, chunks with their vectors as rows of it, and what on
disk makes a table directory a table (``committed``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from nvrag.schema import CHUNK_COLUMNS, Chunk

# when the row was written (UTC, milliseconds); a document's "updated" is its newest chunk's
INDEXED_AT = "indexed_at"
INDEXED_AT_FIELD = pa.field(INDEXED_AT, pa.timestamp("ms", tz="UTC"))


def chunk_schema(dimension: int, vector_dtype: str = "float32", quantization: str = "none") -> pa.Schema:
    bits = [pa.field("bits", pa.list_(pa.uint8(), (dimension + 7) // 8))] if quantization == "binary" else []
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
            pa.field("metadata", pa.json_(pa.utf8())),  # JSON object, stored as Lance JSONB: filterable
            pa.field("vector", pa.list_(pa.float16() if vector_dtype == "float16" else pa.float32(), dimension)),
            *bits,  # binary quantisation: the sign of each dimension, 8 per byte (searched by Hamming distance)
            INDEXED_AT_FIELD,  # last: tables made before it gain it at the end (add_indexed_at)
        ]
    )


def add_indexed_at(dataset: Any) -> None:
    """Give a table written before rows recorded their time the column (null for its old rows: a metadata-only
    change, so old indexes keep working and their documents show no time until they change)."""
    if INDEXED_AT not in dataset.schema.names:
        dataset.add_columns(INDEXED_AT_FIELD)


# the chunk columns as Chunk.to_row gives them (metadata: a JSON string, stored as JSONB)
_ROW_SCHEMA = pa.schema([f for f in chunk_schema(1) if f.name in CHUNK_COLUMNS])


def sign_bits(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Binary quantisation: one bit per dimension, set where the component is positive, packed 8 per byte."""
    return np.packbits(np.asarray(vectors) > 0, axis=-1)


def chunk_table(
    chunks: Sequence[Chunk],
    vectors: npt.NDArray[np.float32],
    dimension: int,
    vector_dtype: str = "float32",
    quantization: str = "none",
    indexed_at: datetime | None = None,
) -> pa.Table:
    """Chunks and their vectors as rows of an index table (chunk_schema), written at ``indexed_at`` (now)."""
    half = vector_dtype == "float16"
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float16 if half else np.float32).reshape(-1))
    bits: dict[str, pa.Array] = {}
    if quantization == "binary":
        packed = sign_bits(vectors)
        bits["bits"] = pa.FixedSizeListArray.from_arrays(pa.array(packed.reshape(-1)), packed.shape[1])
    rows = pa.Table.from_pylist([c.to_row() for c in chunks], schema=_ROW_SCHEMA)
    columns = {name: rows.column(name) for name in CHUNK_COLUMNS}
    when = pa.array([indexed_at or datetime.now(UTC)] * len(chunks), INDEXED_AT_FIELD.type)
    return pa.table(
        {**columns, "vector": pa.FixedSizeListArray.from_arrays(flat, dimension), **bits, INDEXED_AT: when},
        schema=chunk_schema(dimension, vector_dtype, quantization),
    )


def committed(folder: Path) -> bool:
    """Whether a table's directory holds a committed version. LanceDB lists a table as soon as its directory
    exists, but a process killed while creating it (or one still doing so) leaves none: such a directory opens
    as "not found" forever, while creating the table over it works, so it counts as no table (tests/store)."""
    versions = folder / "_versions"
    try:
        return any(p.name.endswith(".manifest") for p in versions.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:  # unreadable (permissions): as LanceDB lists it; opening it says what is wrong
        return True
