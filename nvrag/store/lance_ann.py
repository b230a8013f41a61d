"""Approximate vector indexes of a Lance table: building one, and choosing its search settings from a recall
probe at build time.

Defaults chosen on one kind of data do not carry to another: random vectors have no neighbour structure, real
embeddings are clustered, and the partitions a search must probe for a given recall differ by an order of
magnitude between them (docs/performance.md). So after building, ``probe`` measures recall@10 of query
vectors: the caller's query-like probes when it has them (short spans of stored chunks embedded as queries:
retriever/probing.py), else PROBE_QUERIES of the index's own vectors, sampled. Each is searched with the ANN
at growing ``nprobes`` and against the exact neighbours (a brute-force pass over every vector), leaving out
the chunk it was made from (the span's chunk, or the vector itself), and the smallest setting that reaches
PROBE_TARGET (or the best one tried) is kept; then the fewest candidates per hit re-ranked with the full
vectors (``refine_factor``) that keep that recall. The index's manifest records all three; every search then
uses that setting, and ``nvrag optimize`` prints the recall it measured.

Own vectors flatter an index: a stored vector sits inside the partition trained on it, with its neighbours
close by, while a real query lies farther from every passage and its neighbours spread over more partitions
(on NFCorpus with the bundled model, own vectors reached 0.97 at a setting where held-out real queries reached
0.88). Query-like probes come closer but still score above real questions (a span is a copy of stored text):
0.02-0.06 above NFCorpus's held-out queries over 100k-1M rows at 384 and 4,096 dimensions. So the probe aims
at PROBE_TARGET, above the recall users' queries should get (TARGET_RECALL), and measures PROBE_QUERIES
probes (samples of 100 differed by up to 0.02: docs/performance.md).

Re-ranking is not free: each candidate's full vector is read (16 KB at 4,096 dimensions). RaBitQ's estimates
order candidates well in many dimensions, where 2 candidates per hit keep the recall of 20 at a fraction of
the latency, and less well in few, so the probe measures that too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from nvrag.errors import ConfigError
from nvrag.schema import IndexManifest
from nvrag.store.base import ScoredChunk
from nvrag.store.probes import ProbeQueries


class IndexedTable(Protocol):
    """What building and probing an ANN index needs of a table (lancedb_store.LanceTable, which imports this
    module, never the other way): its manifest, its LanceDB table and Lance dataset, and its search."""

    @property
    def manifest(self) -> IndexManifest: ...

    @property
    def lancedb_table(self) -> Any: ...

    @property
    def dataset(self) -> Any: ...

    def search(
        self, vector: npt.NDArray[np.float32], k: int, *, nprobes: int = 0, refine: int = 0
    ) -> list[ScoredChunk]: ...


ANN_KINDS = ("auto", "ivf-rq", "ivf-pq", "hnsw")
DEFAULT_ANN = "ivf-rq"  # what "auto" builds: RaBitQ codes scan fastest, the full vectors re-rank (performance.md)
RQ_MIN_DIM = 256  # below this, one bit a dimension ranks candidates too coarsely (32-d: recall@10 0.88-0.94)


def auto_kind(dimension: int) -> str:
    """What ``--ann auto`` builds for vectors of ``dimension``: IVF-RQ for embeddings' sizes, else IVF-PQ."""
    return DEFAULT_ANN if dimension >= RQ_MIN_DIM else "ivf-pq"


ANN_MIN_ROWS = 5000  # below this, exact search is fast enough and stays exact
PROBE_QUERIES = 200
PROBE_K = 10
TARGET_RECALL = 0.95  # recall@10 users' queries should get
PROBE_TARGET = 0.98  # what the probe aims at: its queries score 0.02-0.06 above users' (module docstring)
# candidates per hit re-ranked with the full vectors, cheapest first; the probe measures with the last and keeps
# the first whose recall is within REFINE_SLACK of it
REFINES = (2, 5, 10, 20)
REFINE_SLACK = 0.005
LADDER_GROWTH = 1.5  # each nprobes the probe tries is this much larger than the one before


def ann_partitions(rows: int, hnsw: bool = False) -> int:
    """IVF partitions for a table: about sqrt(n), at least 256 vectors each so that k-means trains every one;
    HNSW builds a graph per partition, so it takes 16x fewer, larger partitions."""
    partitions = max(1, min(round(math.sqrt(rows)), rows // 256))
    return max(1, partitions // 16) if hnsw else partitions


@dataclass(frozen=True)
class Probe:
    nprobes: int
    recall: float
    tried: tuple[tuple[int, float], ...]  # (nprobes, recall@10) in the order tried
    refine: int = REFINES[-1]  # candidates per hit re-ranked at that recall


def choose(ladder: Sequence[int], recall_at: Callable[[int], float], target: float = PROBE_TARGET) -> Probe:
    """The first setting of ``ladder`` (cheapest first) whose recall reaches ``target``, else the best tried."""
    tried: list[tuple[int, float]] = []
    for setting in ladder:
        tried.append((setting, recall_at(setting)))
        if tried[-1][1] >= target:
            return Probe(setting, tried[-1][1], tuple(tried))
    best = max(tried, key=lambda t: (t[1], -t[0]))
    return Probe(best[0], best[1], tuple(tried))


def fewest_candidates(found: Probe, recall_at: Callable[[int], float]) -> Probe:
    """``found`` (measured with the most candidates per hit) at the cheapest refine of REFINES whose recall is
    within REFINE_SLACK of it."""
    for refine in REFINES[:-1]:
        recall = recall_at(refine)
        if recall >= found.recall - REFINE_SLACK:
            return Probe(found.nprobes, recall, found.tried, refine)
    return found


def exact_neighbours(
    batches: Any, queries: npt.NDArray[np.float32], own: Sequence[str], k: int = PROBE_K
) -> list[set[str]]:
    """The ``k`` nearest chunk ids (cosine) of each query over every (chunk_id, vector) batch, leaving out the
    query's own chunk: one pass, a running top-k per query."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    best_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(q), k), dtype=object)
    for batch in batches:
        ids = np.asarray(batch.column("chunk_id").to_pylist(), dtype=object)
        column = batch.column("vector")  # fixed-size lists: their flat values, reshaped (no Python objects)
        vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = q @ vectors.T
        scores[ids[None, :] == np.asarray(own, dtype=object)[:, None]] = -np.inf
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
    return [{str(x) for x in row if x is not None} for row in best_ids]


def ladder(partitions: int, start: int) -> list[int]:
    """nprobes to try, cheapest first: ``start``, growing by LADDER_GROWTH, up to every partition."""
    steps, value = [], max(1, min(start, partitions))
    while value < partitions:
        steps.append(value)
        value = max(value + 1, round(value * LADDER_GROWTH))
    return [*steps, partitions]


def build(table: IndexedTable, kind: str, rows: int) -> tuple[str, int]:
    """Build the vector index ``kind`` on ``table`` (rows >= ANN_MIN_ROWS); (what was built, partitions)."""
    from lancedb.index import HnswSq, IvfFlat, IvfPq, IvfRq

    if kind not in ANN_KINDS:
        raise ConfigError(f"unknown ANN kind {kind!r}; use auto, ivf-rq, ivf-pq, hnsw or none")
    manifest = table.manifest
    kind = auto_kind(manifest.dimension) if kind == "auto" else kind
    partitions = ann_partitions(rows)
    if manifest.quantization == "binary":
        # the bits are already compact: an inverted file over them (Hamming), candidates still rescored
        table.lancedb_table.create_index("bits", config=IvfFlat(distance_type="hamming", num_partitions=partitions))
        return f"binary index: IVF over the sign bits ({partitions} partitions), full vectors rescore", partitions
    dim = manifest.dimension
    if kind == "ivf-rq":
        # RaBitQ: one bit a dimension, scanned with popcounts and corrected estimates; the full vectors re-rank
        config: Any = IvfRq(distance_type="cosine", num_partitions=partitions)
    elif kind == "ivf-pq":
        # 4 dims per PQ sub-vector (16 above 1,024 dims, where 4 makes training slow); a divisor of dim;
        # the full vectors re-rank the candidates (refine_factor)
        per = 4 if dim <= 1024 else 16
        sub = next(d for d in (dim // per, dim // 2, dim) if d >= 1 and dim % d == 0)
        config = IvfPq(distance_type="cosine", num_partitions=partitions, num_sub_vectors=sub)
    else:
        partitions = ann_partitions(rows, hnsw=True)
        config = HnswSq(distance_type="cosine", num_partitions=partitions, m=20, ef_construction=300)
    table.lancedb_table.create_index("vector", config=config, replace=True)
    return f"{kind} index over {rows} rows ({partitions} partitions)", partitions


def probe(table: IndexedTable, partitions: int, start: int, given: ProbeQueries | None = None, seed: int = 0) -> Probe:
    """Recall@10 of ``table``'s ANN index at growing nprobes, for ``given`` query-like probes or, without them,
    PROBE_QUERIES of the table's own vectors; each leaves out the chunk it was made from."""
    dataset = table.dataset
    if given is None:
        rows = dataset.count_rows()
        picked = np.random.default_rng(seed).choice(rows, size=min(PROBE_QUERIES, rows), replace=False)
        sample = dataset.take(sorted(picked.tolist()), columns=["chunk_id", "vector"])
        own: list[str] = sample.column("chunk_id").to_pylist()
        queries = np.asarray(sample.column("vector").to_pylist(), dtype=np.float32)
    else:
        own, queries = list(given.sources), np.asarray(given.vectors, dtype=np.float32)  # ("" leaves none out)
    truth = exact_neighbours(dataset.to_batches(columns=["chunk_id", "vector"], batch_size=65536), queries, own)

    def recall_at(nprobes: int, refine: int = REFINES[-1]) -> float:
        found = 0
        for q, chunk_id, exact in zip(queries, own, truth, strict=True):
            hits = table.search(q, PROBE_K + (1 if chunk_id else 0), nprobes=nprobes, refine=refine)
            found += len(exact & ({h.chunk.chunk_id for h in hits} - {chunk_id}))
        return found / max(1, sum(len(t) for t in truth))

    found = choose(ladder(partitions, start), recall_at)
    return fewest_candidates(found, lambda refine: recall_at(found.nprobes, refine))
