"""Search latency (p50/p95) and recall@10 against exact search, LanceDB and FAISS side by side.

Random L2-normalised vectors (the hardest case for ANN: no cluster structure), stored through nvrag's Store
interface, then each backend's exact, HNSW and IVF-PQ search as `nvrag optimize --ann` builds them, and
LanceDB's binary quantisation (`--quantize binary`). Each approximate index is measured at several search
settings (probes / ef / candidates), the first being nvrag's default for that table size, so the trade-off
between latency and recall is visible.

    python bench/search_ann.py --rows 100000 --dim 384 --queries 200
    python bench/search_ann.py --rows 1000000 --dim 384        # the issue's 1M x 384 goal
    python bench/search_ann.py --rows 100000 --dim 4096 --kinds flat hnsw binary
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from nvrag.schema import Chunk, ChunkerSettings, IndexManifest
from nvrag.store import LanceStore, Store, Table
from nvrag.store import lancedb_store as lance_module
from nvrag.store.faiss_store import FaissStore, FaissVectors


def manifest(dim: int, quantization: str = "none") -> IndexManifest:
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
        quantization=quantization,
    )


def fill(store: Store, vectors: np.ndarray, batch: int, quantization: str = "none") -> Table:
    table = store.create(replace(manifest(vectors.shape[1], quantization), name=f"bench-{quantization}"))
    for i in range(0, len(vectors), batch):
        part = vectors[i : i + batch]
        chunks = [Chunk(f"c{j}", f"d{j}", "-", 0, "", 0, 0) for j in range(i, i + len(part))]
        table.upsert(chunks, part)
    return table


def measure(table: Table, queries: np.ndarray, truth: list[set[str]]) -> tuple[float, float, float]:
    table.search(queries[0], 10)  # warm caches (index files, page cache) outside the timing
    times, found = [], 0
    for q, exact in zip(queries, truth, strict=True):
        start = time.perf_counter()
        hits = table.search(q, 10)
        times.append((time.perf_counter() - start) * 1000)
        found += len(exact & {h.chunk.chunk_id for h in hits})
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], found / (10 * len(queries))


@contextmanager
def lance_settings(**values: int) -> Iterator[None]:
    """Temporarily set LanceDB search constants (ANN_NPROBES, ANN_REFINE, ANN_EF, BINARY_CANDIDATES)."""
    old = {k: getattr(lance_module, k) for k in values}
    for k, v in values.items():
        setattr(lance_module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(lance_module, k, v)


@contextmanager
def lance_probes(table: Table, nprobes: int, **values: int) -> Iterator[None]:
    """Searches of ``table`` probing ``nprobes`` partitions (instead of its manifest's), with other constants."""
    saved = table._manifest  # type: ignore[attr-defined]
    table._manifest = replace(saved, ann_nprobes=nprobes)  # type: ignore[attr-defined]
    try:
        with lance_settings(**values):
            yield
    finally:
        table._manifest = saved  # type: ignore[attr-defined]


def faiss_vectors(table: Table) -> FaissVectors:
    vectors = table._vectors  # type: ignore[attr-defined]
    assert isinstance(vectors, FaissVectors)
    return vectors


@contextmanager
def faiss_settings(table: Table, nprobe: int | None = None, ef: int | None = None) -> Iterator[None]:
    v = faiss_vectors(table)
    old = (v.nprobe, v.ef)
    v.nprobe, v.ef = nprobe, ef
    try:
        yield
    finally:
        v.nprobe, v.ef = old


def sweeps(store: str, kind: str, table: Table) -> list[tuple[str, Callable[[], object]]]:
    """(label, context manager factory) per search setting; the first is nvrag's default."""
    rows = table.count()
    if store == "lancedb":
        # the build's recall probe chose nprobes (the manifest): sweep from there
        probes = table.manifest.ann_nprobes or lance_module.ann_nprobes(rows, hnsw=kind == "hnsw")
        probed = f"probed: nprobes {probes}, recall@10 {table.manifest.ann_recall} on its own vectors"
        if kind == "hnsw":
            default = f"default ({probed}; ef {lance_module.ANN_EF}, refine {lance_module.ANN_REFINE})"
            return [(default, lambda: lance_settings())] + [
                (f"nprobes {p}, ef {e}", lambda p=p, e=e: lance_probes(table, p, ANN_EF=e))
                for p, e in ((2 * probes, 300), (4 * probes, 600))
            ]
        if kind == "ivf-pq":
            default = f"default ({probed}; refine {lance_module.ANN_REFINE})"
            return [(default, lambda: lance_settings())] + [
                (f"nprobes {p}, refine {r}", lambda p=p, r=r: lance_probes(table, p, ANN_REFINE=r))
                for p, r in ((2 * probes, 50), (4 * probes, 100))
            ]
        if kind == "binary":
            return [("default", lambda: lance_settings())] + [
                (f"{c} candidates per hit", lambda c=c: lance_settings(BINARY_CANDIDATES=c, BINARY_MIN_CANDIDATES=0))
                for c in (100, 400)
            ]
    if store == "faiss":
        if kind == "hnsw":
            return [("default", lambda: faiss_settings(table))] + [
                (f"efSearch {e}", lambda e=e: faiss_settings(table, ef=e)) for e in (256, 512, 1024)
            ]
        if kind == "ivf-pq":
            return [("default", lambda: faiss_settings(table))] + [
                (f"nprobe {p}", lambda p=p: faiss_settings(table, nprobe=p)) for p in (128, 256)
            ]
    return [("exact", lambda: lance_settings())]


def row(store: str, index: str, build: float, setting: str, p50: float, p95: float, recall: float) -> None:
    print(f"| {store} | {index} | {build:.1f} | {setting} | {p50:.1f} | {p95:.1f} | {recall:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--stores", nargs="+", default=["lancedb", "faiss"])
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf-pq", "binary"])
    parser.add_argument("--quick", action="store_true", help="only nvrag's default search settings")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.choice(args.rows, args.queries, replace=False)
    queries = vectors[picks] + 0.1 * rng.normal(size=(args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = [{f"c{j}" for j in np.argpartition(-(vectors @ q), 10)[:10]} for q in queries]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {args.rows} x {args.dim} random vectors; "
        f"{args.queries} queries; k=10"
    )
    print("| store | index | build s | search setting | p50 ms | p95 ms | recall@10 |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |", flush=True)
    for name in args.stores:
        root = Path(tempfile.mkdtemp(prefix=f"nvrag-ann-{name}-"))
        store: Store = LanceStore(str(root)) if name == "lancedb" else FaissStore(root)
        kinds = [k for k in args.kinds if not (k == "binary" and name != "lancedb")]
        table = fill(store, vectors, args.batch) if any(k != "binary" for k in kinds) else None
        for kind in kinds:
            start = time.perf_counter()
            if kind == "binary":
                target = fill(store, vectors, args.batch, "binary")
                label = "binary (flat)"
            else:
                assert table is not None
                target = table
                label = kind
                if kind != "flat":
                    target.build_ann("none")
                    target.build_ann(kind)
            build = time.perf_counter() - start
            settings = sweeps(name, kind, target)
            for setting, context in settings[:1] if args.quick else settings:
                with context():  # type: ignore[attr-defined]
                    p50, p95, recall = measure(target, queries, truth)
                row(name, label, build, setting, p50, p95, recall)
            if kind == "binary" and args.rows >= lance_module.ANN_MIN_ROWS:
                start = time.perf_counter()
                target.build_ann("ivf-pq")  # an inverted file over the bits
                build = time.perf_counter() - start
                p50, p95, recall = measure(target, queries, truth)
                row(name, "binary (IVF)", build, "default", p50, p95, recall)


if __name__ == "__main__":
    main()
