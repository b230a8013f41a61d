"""Search latency (p50/p95) and recall@10 against exact search, LanceDB and FAISS side by side.

Random L2-normalised vectors (the hardest case for ANN: no cluster structure), stored through nvrag's Store
interface, then each backend's exact, HNSW and IVF-PQ search as `nvrag optimize --ann` builds them.

    python bench/search_ann.py --rows 100000 --dim 384 --queries 200
    python bench/search_ann.py --rows 1000000 --dim 384        # the issue's 1M x 384 goal
    python bench/search_ann.py --rows 100000 --dim 4096
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from nvrag.schema import Chunk, ChunkerSettings, IndexManifest
from nvrag.store import LanceStore, Store, Table
from nvrag.store.faiss_store import FaissStore


def manifest(dim: int) -> IndexManifest:
    return IndexManifest(
        name="bench",
        model="random",
        model_revision="0",
        dimension=dim,
        normalized=True,
        query_template="",
        document_template="",
        license="-",
        chunker=ChunkerSettings(),
        nvrag_version="bench",
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )


def fill(store: Store, vectors: np.ndarray, batch: int) -> Table:
    table = store.create(manifest(vectors.shape[1]))
    for i in range(0, len(vectors), batch):
        part = vectors[i : i + batch]
        chunks = [Chunk(f"c{j}", f"d{j}", "-", 0, "", 0, 0) for j in range(i, i + len(part))]
        table.upsert(chunks, part)
    return table


def measure(table: Table, queries: np.ndarray, truth: list[set[str]]) -> tuple[float, float, float]:
    times, found = [], 0
    for q, exact in zip(queries, truth, strict=True):
        start = time.perf_counter()
        hits = table.search(q, 10)
        times.append((time.perf_counter() - start) * 1000)
        found += len(exact & {h.chunk.chunk_id for h in hits})
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], found / (10 * len(queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.choice(args.rows, args.queries, replace=False)
    queries = vectors[picks] + 0.1 * rng.normal(size=(args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = [{f"c{j}" for j in np.argsort(-(vectors @ q))[:10]} for q in queries]
    print(f"machine: {platform.machine()}; {args.rows} x {args.dim} random vectors; {args.queries} queries; k=10")
    print("| store | index | build s | p50 ms | p95 ms | recall@10 |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for name, make in (("lancedb", lambda p: LanceStore(str(p))), ("faiss", FaissStore)):
        root = Path(tempfile.mkdtemp(prefix=f"nvrag-ann-{name}-"))
        table = fill(make(root), vectors, args.batch)
        for kind in ("flat", "hnsw", "ivf-pq"):
            start = time.perf_counter()
            if kind != "flat":
                table.build_ann("none")
                table.build_ann(kind)
            build = time.perf_counter() - start
            p50, p95, recall = measure(table, queries, truth)
            print(f"| {name} | {kind} | {build:.1f} | {p50:.1f} | {p95:.1f} | {recall:.3f} |")


if __name__ == "__main__":
    main()
