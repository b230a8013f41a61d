"""LanceDB ANN indexes: recall against exact search, and small tables left exact."""

from __future__ import annotations

import numpy as np
import pytest

from nvrag.schema import Chunk
from nvrag.store import LanceStore
from tests.store.test_lancedb_store import manifest

DIM = 32


def fill(store: LanceStore, rows: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = store.create(manifest(dim=DIM))
    chunks = [Chunk(f"c{i}", f"d{i}", "s", 0, f"t{i}", 0, 2) for i in range(rows)]
    for i in range(0, rows, 2000):
        table.upsert(chunks[i : i + 2000], vectors[i : i + 2000])
    return vectors


@pytest.mark.parametrize("kind", ["ivf-pq", "hnsw"])
def test_ann_recall_at_10_against_exact(store: LanceStore, kind: str) -> None:
    vectors = fill(store, 6000)
    table = store.open("docs")
    assert table.build_ann(kind).startswith(f"{kind} index over 6000 rows")
    rng = np.random.default_rng(4)
    queries = vectors[rng.choice(len(vectors), 20, replace=False)] + 0.05 * rng.normal(size=(20, DIM)).astype(
        np.float32
    )
    found = 0
    for q in queries:
        q = q / np.linalg.norm(q)
        exact = {f"c{i}" for i in np.argsort(-(vectors @ q))[:10]}
        found += len(exact & {h.chunk.chunk_id for h in table.search(q.astype(np.float32), 10)})
    assert found / 200 >= 0.9
    assert table.build_ann("none") == "vector index dropped: searches are exact"


def test_small_tables_stay_exact(store: LanceStore) -> None:
    fill(store, 100)
    assert store.open("docs").build_ann("hnsw") == (
        "100 rows: below 5000, exact search is fast and exact; no vector index built"
    )
