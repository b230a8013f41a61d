"""The store conformance suite against the writer, as the engines use it: the local engine stages and commits
in this process; the Ray engine pickles the stager to worker processes, which stage batches there, and the
driver commits them. Either way the index must equal the NumPy oracle's, and nothing staged is visible
before its commit."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nvrag.errors import ConfigError
from nvrag.retriever import parse_filters
from nvrag.schema import Chunk
from nvrag.store import LanceStore, Store
from nvrag.store.base import Staged, Stager
from tests.store.test_conformance import BACKENDS, DIM, corpus, queries
from tests.store.test_lancedb_store import manifest


def stage_elsewhere(blob: bytes, chunks: Sequence[Chunk], vectors: np.ndarray) -> Staged:
    """A worker process: unpickle the stager it was sent and stage one batch (what a Ray actor does)."""
    stager: Stager = pickle.loads(blob)
    return stager(chunks, vectors)


@pytest.fixture(scope="module")
def workers() -> ProcessPoolExecutor:
    # spawn: a fresh interpreter, as a Ray worker is (no state inherited from this process)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool  # type: ignore[misc]


def same_as_oracle(store: Store, oracle: Store) -> None:
    table, reference = store.open("docs"), oracle.open("docs")
    assert table.count() == reference.count()
    for q in queries():
        got, want = table.search(q, 10), reference.search(q, 10)
        assert [h.chunk for h in got] == [h.chunk for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    where = parse_filters(["lang != de and year < 2004"])
    got_ids = [h.chunk.chunk_id for h in table.search(queries()[0], 60, where)]
    assert got_ids == [h.chunk.chunk_id for h in reference.search(queries()[0], 60, where)]
    assert {s.chunk.chunk_id for s in table.text_search("banana", 60)} == {
        s.chunk.chunk_id for s in reference.text_search("banana", 60)
    }


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_the_in_process_writer_of_every_backend_equals_the_oracle(kind: str, tmp_path: Path, oracle: Store) -> None:
    store = BACKENDS[kind](tmp_path / kind)
    table = store.create(manifest(dim=DIM))
    chunks, vectors = corpus()
    writer = table.writer()
    first, second = writer.stage(chunks[:25], vectors[:25]), writer.stage(chunks[25:], vectors[25:])
    assert (first.rows, second.rows) == (25, 35)
    assert store.open("docs").count() == 0  # staged is not committed
    writer.commit([first])
    writer.commit([second])
    writer.finish()
    table.refresh_indexes()
    same_as_oracle(store, oracle)


def test_fragments_staged_in_worker_processes_and_committed_here_equal_the_oracle(
    tmp_path: Path, oracle: Store, workers: ProcessPoolExecutor
) -> None:
    store = LanceStore(str(tmp_path / "lancedb"))
    table = store.create(manifest(dim=DIM))
    chunks, vectors = corpus()
    writer = table.writer()
    blob = pickle.dumps(writer.stager())
    staged = [
        workers.submit(stage_elsewhere, blob, chunks[i : i + 20], vectors[i : i + 20]).result()
        for i in range(0, len(chunks), 20)
    ]
    assert [s.rows for s in staged] == [20, 20, 20]
    assert LanceStore(str(tmp_path / "lancedb")).open("docs").count() == 0  # fragments written, not committed
    writer.commit(staged[:2])
    writer.commit(staged[2:])
    writer.finish()
    assert set(table.indexed_at([c.chunk_id for c in chunks])) == {c.chunk_id for c in chunks}
    table.refresh_indexes()
    same_as_oracle(store, oracle)
    same_as_oracle(LanceStore(str(tmp_path / "lancedb")), oracle)  # and from disk


def test_batches_staged_but_never_committed_are_ignored_and_a_rerun_completes_once(
    tmp_path: Path, oracle: Store, workers: ProcessPoolExecutor
) -> None:
    store = LanceStore(str(tmp_path / "lancedb"))
    chunks, vectors = corpus()
    writer = store.create(manifest(dim=DIM)).writer()
    lost = workers.submit(stage_elsewhere, pickle.dumps(writer.stager()), chunks, vectors).result()
    assert lost.rows == len(chunks)  # a driver that died here never committed them
    rerun = LanceStore(str(tmp_path / "lancedb")).open("docs")
    assert rerun.count() == 0
    again = rerun.writer()
    again.commit([workers.submit(stage_elsewhere, pickle.dumps(again.stager()), chunks, vectors).result()])
    again.finish()
    rerun.refresh_indexes()
    assert sorted(c for ids in rerun.chunk_ids_by_doc().values() for c in ids) == sorted(c.chunk_id for c in chunks)
    same_as_oracle(store, oracle)


@pytest.mark.parametrize("kind", ["faiss", "numpy"])
def test_stores_that_write_in_process_only_refuse_a_stager(kind: str, tmp_path: Path) -> None:
    store = BACKENDS[kind](tmp_path / kind)
    assert not store.distributed_writes
    with pytest.raises(ConfigError, match=r"stages batches in this process only; distributed indexing"):
        store.create(manifest(dim=DIM)).writer().stager()
    assert LanceStore(str(tmp_path / "l")).distributed_writes


def test_a_staged_batch_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    chunks, vectors = corpus(4)
    for kind in BACKENDS:
        writer = BACKENDS[kind](tmp_path / kind).create(manifest(dim=DIM)).writer()
        with pytest.raises(ValueError, match=r"expected vectors of shape \(4, 16\)"):
            writer.stage(chunks, vectors[:3])


def test_fragments_and_the_chunks_they_replace_commit_as_one_version(
    tmp_path: Path, workers: ProcessPoolExecutor
) -> None:
    """The Ray engine's commit of new fragments with the stale chunks of their documents is one Lance
    transaction: every version a reader can open holds each document wholly old or wholly new."""
    import lance

    store = LanceStore(str(tmp_path / "lancedb"))
    chunks, vectors = corpus()  # d0..d19, three chunks each
    table = store.create(manifest(dim=DIM))
    table.upsert(chunks, vectors)
    new = [replace(c, chunk_id=f"{c.chunk_id}-v2", text=c.text + " again") for c in chunks[:6]]  # d0, d1
    writer = table.writer()
    staged = workers.submit(stage_elsewhere, pickle.dumps(writer.stager()), new, vectors[:6]).result()
    before = lance.dataset(table.uri).version
    writer.commit([staged], replaced={c.chunk_id for c in chunks[:6]} | {"c1-not-stored"})
    writer.finish()
    after = lance.dataset(table.uri).version
    assert after == before + 1
    for version, want in ((before, {c.chunk_id for c in chunks}), (after, {c.chunk_id for c in [*new, *chunks[6:]]})):
        rows = lance.dataset(table.uri, version=version).to_table(columns=["chunk_id"]).column(0).to_pylist()
        assert sorted(rows) == sorted(want)
    reopened = LanceStore(str(tmp_path / "lancedb")).open("docs")
    assert reopened.count() == 60
    assert [c.text for c in reopened.get(["c0-v2", "c7"])] == [new[0].text, chunks[7].text]
    hits = reopened.search(vectors[0], 1)
    assert hits[0].chunk.chunk_id == "c0-v2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
