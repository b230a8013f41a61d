"""Search latency (p50/p95) and recall@10 against exact search, LanceDB and FAISS side by side.

Vectors stored through nvrag's Store interface, then each backend's exact, HNSW and IVF-PQ search as
`nvrag optimize --ann` builds them, and LanceDB's binary quantisation (`--quantize binary`). Each approximate
index is measured at several search settings (probes / ef / candidates), the first being nvrag's default for
that table (the setting its build-time recall probe chose), so the trade-off between latency and recall is
visible.

By default the vectors are random and L2-normalised (the hardest case for ANN: no neighbour structure) and the
queries are stored vectors plus a little noise. With --realistic they keep real embeddings' neighbour
structure (bench/realistic_vectors.py: the bundled model's vectors of every local text, expanded to --rows by
a documented procedure, lifted to --dim) and the queries are real held-out texts (NFCorpus's queries); first a
validation table compares, at the real vectors' own size, the real vectors with synthetic ones expanded by the
same factor (--validate-only stops there).

    python bench/search_ann.py --rows 100000 --dim 384 --queries 200
    python bench/search_ann.py --rows 1000000 --dim 384        # the issue's 1M x 384 goal
    python bench/search_ann.py --rows 100000 --dim 4096 --kinds flat hnsw binary
    python bench/search_ann.py --realistic --rows 1000000 --dim 384 --kinds flat ivf-pq --stores lancedb
    python bench/search_ann.py --realistic --rows 100000 --dim 4096 --kinds flat ivf-pq --stores lancedb
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import realistic_vectors as realistic

from nvrag.schema import Chunk, ChunkerSettings, IndexManifest
from nvrag.store import LanceStore, Store, Table, lance_ann
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
    refine = values.get("ANN_REFINE", saved.ann_refine)
    table._manifest = replace(saved, ann_nprobes=nprobes, ann_refine=refine)  # type: ignore[attr-defined]
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
        refine = table.manifest.ann_refine or lance_module.ANN_REFINE
        probed = (
            f"probed: nprobes {probes}, refine {refine}, recall@10 {table.manifest.ann_recall} by its build's probe"
        )
        if kind == "hnsw":
            default = f"default ({probed}; ef {lance_module.ANN_EF})"
            return [(default, lambda: lance_settings())] + [
                (f"nprobes {p}, ef {e}", lambda p=p, e=e: lance_probes(table, p, ANN_EF=e))
                for p, e in ((2 * probes, 300), (4 * probes, 600))
            ]
        if kind in ("ivf-pq", "ivf-rq"):
            default = f"default ({probed})"
            others = dict.fromkeys([(probes, lance_module.ANN_REFINE), (2 * probes, refine), (2 * probes, 20)])
            return [(default, lambda: lance_settings())] + [
                (f"nprobes {p}, refine {r}", lambda p=p, r=r: lance_probes(table, p, ANN_REFINE=r))
                for p, r in others
                if (p, r) != (probes, refine)
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


def scratch(prefix: str) -> Path:
    """A temporary folder for one store, removed when the bench ends (a 1M-row table takes gigabytes)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nfcorpus"
DEMO = Path(__file__).resolve().parent.parent / "data" / "demo" / "stdlib.jsonl"


def random_data(rows: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.choice(rows, queries, replace=False)
    near = vectors[picks] + 0.1 * rng.normal(size=(queries, dim)).astype(np.float32) / np.sqrt(dim)
    return vectors, (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)


def truth_of(vectors: np.ndarray, queries: np.ndarray) -> list[set[str]]:
    return [{f"c{j}" for j in row} for row in realistic.nearest(vectors, 10, queries)]


def held_out_recall(table: Table, nprobes: int, queries: np.ndarray, truth: list[set[str]]) -> float:
    with lance_probes(table, nprobes):
        return measure(table, queries, truth)[2]


def validate(real: np.ndarray, texts: list[str], queries: np.ndarray, factor: float, dim: int, batch: int) -> None:
    """Real vectors against synthetic ones of the same size expanded by ``factor`` (and random ones), with the
    same held-out queries: exact neighbours' cosines; the recall probe's choice from its own vectors and from
    query-like probes (spans of the texts, as `nvrag optimize` makes them); the held-out queries' recall@10 in
    the default ANN index (`nvrag optimize`'s auto) at that choice and at fixed nprobes."""
    rng = np.random.default_rng(1)
    n = len(real)
    picked = rng.choice(n, max(realistic.K_SEED + 1, round(n / factor)), replace=False)
    sets = {
        "real": (real, texts),
        f"synthetic (from {len(picked)} real, x{factor:.1f})": (
            realistic.expand(real[picked], n, seed=2),
            [texts[i] for i in picked],
        ),
        "random": (random_data(n, real.shape[1], 1)[0], []),
    }
    print(
        f"validation at the real vectors' own size: {n} x {dim}, {len(queries)} held-out real queries; "
        f"the default ANN index ({lance_ann.DEFAULT_ANN})"
    )
    print(
        "| vectors | 1st cos | 10th cos | 10th-11th gap | own-vector probe: nprobes (recall) | query-like probe: "
        "nprobes (recall) | held-out recall there | held-out recall@10 at nprobes 4 / 8 / 16 / 32 |"
    )
    print("| --- | ---: | ---: | ---: | --- | --- | ---: | --- |", flush=True)
    lifted = realistic.lift(queries, dim)
    for label, (vectors, sources) in sets.items():
        vectors = realistic.lift(vectors, dim)
        first, tenth, gap = realistic.neighbour_profile(vectors, lifted)
        truth = truth_of(vectors, lifted)
        table = fill(LanceStore(str(scratch("nvrag-ann-validate-"))), vectors, batch)
        table.build_ann("auto")
        own = f"{table.manifest.ann_nprobes} ({table.manifest.ann_recall})"
        like, there = "-", "-"
        if sources:
            partitions = lance_ann.ann_partitions(n)
            found = lance_ann.probe(
                table,
                partitions,
                max(1, lance_module.ann_nprobes(n) // 2),  # type: ignore[arg-type]
                realistic.probe_vectors(sources, dim),
            )
            like = f"{found.nprobes} ({found.recall:.3f})"
            there = f"{held_out_recall(table, found.nprobes, lifted, truth):.3f}"
        fixed = " / ".join(f"{held_out_recall(table, p, lifted, truth):.3f}" for p in (4, 8, 16, 32))
        print(f"| {label} | {first:.3f} | {tenth:.3f} | {gap:.4f} | {own} | {like} | {there} | {fixed} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--stores", nargs="+", default=["lancedb", "faiss"])
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf-rq", "ivf-pq", "binary"])
    parser.add_argument("--quick", action="store_true", help="only nvrag's default search settings")
    parser.add_argument("--realistic", action="store_true", help="real neighbour structure and held-out queries")
    parser.add_argument("--validate-only", action="store_true", help="with --realistic: only the validation")
    parser.add_argument("--no-validation", action="store_true", help="with --realistic: skip the validation")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "nvrag-ann-realistic",
        help="with --realistic: where the real vectors are cached",
    )
    parser.add_argument("--dataset", type=Path, default=DATASET, help="with --realistic: the BEIR NFCorpus folder")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; k=10")
    if args.realistic:
        real, held_out = realistic.embedded(args.cache, args.dataset, DEMO)
        texts = realistic.real_texts(args.dataset, DEMO)
        held = held_out[np.random.default_rng(0).permutation(len(held_out))[: args.queries]]
        if not args.no_validation:
            validate(real, texts, held, args.rows / len(real), args.dim, args.batch)
        queries = realistic.lift(held, args.dim)
        if args.validate_only:
            return
        vectors = realistic.lift(realistic.expand(real, args.rows), args.dim)
        probes = realistic.probe_vectors(texts, args.dim)
        kind = f"realistic vectors ({len(real)} real, expanded), {args.queries} held-out real queries"
    else:
        vectors, queries = random_data(args.rows, args.dim, args.queries)
        probes = None
        kind = f"random vectors, {args.queries} queries (stored vectors plus noise)"
    truth = truth_of(vectors, queries)
    print(f"{args.rows} x {args.dim} {kind}")
    print("| store | index | build s | search setting | p50 ms | p95 ms | recall@10 |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |", flush=True)
    for name in args.stores:
        root = scratch(f"nvrag-ann-{name}-")
        store: Store = LanceStore(str(root)) if name == "lancedb" else FaissStore(root)
        kinds = [k for k in args.kinds if not (k in ("binary", "ivf-rq") and name != "lancedb")]
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
                    target.build_ann(kind, probes)
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
