"""The recall probe that chooses an ANN index's search setting at build time (nvrag/store/lance_ann.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from nvrag.store import LanceStore
from nvrag.store.lance_ann import (
    PROBE_QUERIES,
    PROBE_TARGET,
    REFINE_SLACK,
    REFINES,
    Probe,
    ann_partitions,
    choose,
    exact_neighbours,
    fewest_candidates,
    ladder,
)
from nvrag.store.lancedb_store import ann_nprobes
from nvrag.store.probes import ProbeQueries
from tests.store.test_ann import DIM, fill


def test_the_cheapest_setting_that_reaches_the_target_is_chosen() -> None:
    curve = {5: 0.80, 10: 0.93, 20: 0.985, 40: 0.99}
    asked: list[int] = []

    def recall(nprobes: int) -> float:
        asked.append(nprobes)
        return curve[nprobes]

    found = choose([5, 10, 20, 40], recall)
    assert (found.nprobes, found.recall) == (20, 0.985)
    assert asked == [5, 10, 20]  # no setting past the first good one is measured
    never = choose([5, 10], {5: 0.5, 10: 0.7}.__getitem__)
    assert (never.nprobes, never.recall, never.tried) == (10, 0.7, ((5, 0.5), (10, 0.7)))  # the best tried


def test_the_ladder_grows_by_half_up_to_every_partition() -> None:
    assert ladder(77, 10) == [10, 15, 22, 33, 50, 75, 77]
    assert ladder(4, 1) == [1, 2, 3, 4]  # at least one more partition a step
    assert ladder(8, 20) == [8]
    assert ladder(1, 1) == [1]


def test_the_fewest_candidates_per_hit_that_keep_the_recall_are_kept() -> None:
    found = Probe(30, 0.980, ((30, 0.980),))
    assert REFINES[-1] == found.refine == 20  # the probe measured nprobes with the most candidates
    asked: list[int] = []

    def curve(values: dict[int, float]) -> object:
        def recall(refine: int) -> float:
            asked.append(refine)
            return values[refine]

        return recall

    kept = fewest_candidates(found, curve({2: 0.97, 5: 0.976, 10: 0.979}))  # type: ignore[arg-type]
    assert (kept.nprobes, kept.refine, kept.recall) == (30, 5, 0.976)  # 2 loses more than REFINE_SLACK
    assert asked == [2, 5]
    assert fewest_candidates(found, curve({2: 0.9, 5: 0.9, 10: 0.9})) == found  # type: ignore[arg-type]
    assert REFINE_SLACK == 0.005


def test_exact_neighbours_are_the_brute_force_ones_without_the_query_itself() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    ids = [f"c{i}" for i in range(300)]
    table = pa.table({"chunk_id": ids, "vector": pa.array(vectors.tolist(), pa.list_(pa.float32(), 8))})
    picked = [3, 150, 299]
    got = exact_neighbours(table.to_batches(max_chunksize=64), vectors[picked], [ids[i] for i in picked], k=5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row, i in zip(got, picked, strict=True):
        scores = unit @ unit[i]
        scores[i] = -np.inf
        assert row == {ids[j] for j in np.argsort(-scores)[:5]}


@pytest.mark.parametrize("kind", ["ivf-pq", "hnsw"])
def test_building_an_index_records_the_setting_and_the_recall_it_measured(store: LanceStore, kind: str) -> None:
    fill(store, 6000)
    said = store.open("docs").build_ann(kind)
    manifest = LanceStore(store.uri).open("docs").manifest  # recorded, as any later search reads it
    assert manifest.ann_nprobes >= 1 and manifest.ann_recall is not None
    assert manifest.ann_refine in REFINES
    assert (
        f"searches probe {manifest.ann_nprobes} partitions and re-rank {manifest.ann_refine} candidates per hit: "
        f"recall@10 {manifest.ann_recall:.3f}"
    ) in said
    assert f"measured with {PROBE_QUERIES} of its own vectors" in said
    if manifest.ann_recall < PROBE_TARGET:  # only when no setting reached the target: every partition
        assert manifest.ann_nprobes == int(said.split("(")[1].split()[0])
    table = LanceStore(store.uri).open("docs")
    table.set_manifest(replace(table.manifest, ann_nprobes=1))  # a setting whose results differ: one partition
    reopened = LanceStore(store.uri).open("docs")
    rng = np.random.default_rng(9)
    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    ids = [[h.chunk.chunk_id for h in reopened.search(q, 10)] for q in queries]
    one = [[h.chunk.chunk_id for h in reopened.search(q, 10, nprobes=1)] for q in queries]
    every = [[h.chunk.chunk_id for h in reopened.search(q, 10, nprobes=1000)] for q in queries]
    assert ids == one  # searches use the recorded setting
    assert kind == "hnsw" or one != every  # (HNSW over 6,000 rows has one partition: one is every)
    table.set_manifest(replace(table.manifest, ann_nprobes=1000, ann_refine=1))  # and its candidates per hit
    reopened = LanceStore(store.uri).open("docs")
    ids = [[h.chunk.chunk_id for h in reopened.search(q, 10)] for q in queries]
    assert ids == [[h.chunk.chunk_id for h in reopened.search(q, 10, refine=1)] for q in queries]
    assert ids != [[h.chunk.chunk_id for h in reopened.search(q, 10, refine=20)] for q in queries]
    assert table.build_ann("none") == "vector index dropped: searches are exact"
    assert (LanceStore(store.uri).open("docs").manifest.ann_nprobes, table.manifest.ann_refine) == (0, 0)


def test_query_like_probes_choose_the_setting_by_their_own_recall(store: LanceStore) -> None:
    vectors = fill(store, 6000)
    rng = np.random.default_rng(11)
    queries = rng.normal(size=(20, DIM)).astype(np.float32)
    left_out = [f"c{i}" for i in np.argmax(queries @ vectors.T, axis=1)]  # as if each were cut from its nearest
    said = store.open("docs").build_ann("ivf-pq", ProbeQueries(queries, left_out))
    table = LanceStore(store.uri).open("docs")
    chosen = table.manifest.ann_nprobes
    assert "measured with 20 query-like probes (spans of its chunks, embedded as queries)" in said
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = [{f"c{j}" for j in np.argsort(-(vectors @ q))[1:11]} for q in unit]  # the source left out

    def recall(nprobes: int, refine: int = 0) -> float:
        hits = [{h.chunk.chunk_id for h in table.search(q, 11, nprobes=nprobes, refine=refine)} for q in queries]
        return sum(len((h - {o}) & e) for h, e, o in zip(hits, exact, left_out, strict=True)) / 200

    assert table.manifest.ann_recall == round(recall(chosen), 4)  # what was recorded is these queries' recall
    most = recall(chosen, REFINES[-1])
    if table.manifest.ann_recall >= PROBE_TARGET and chosen > 1:
        steps = ladder(ann_partitions(6000), max(1, ann_nprobes(6000) // 2))
        assert chosen == steps[0] or recall(steps[steps.index(chosen) - 1], REFINES[-1]) < PROBE_TARGET
    for cheaper in REFINES[: REFINES.index(table.manifest.ann_refine)]:
        assert recall(chosen, cheaper) < most - REFINE_SLACK  # and fewer candidates per hit lost recall
