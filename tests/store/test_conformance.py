"""One conformance suite for every Store backend, with the NumPy brute-force store as the oracle.

Exact search must return the oracle's chunks and scores; filters, deletes, lookups, manifests, rebuilds and full
text behave the same everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from nvrag.retriever import parse_filters
from nvrag.schema import Chunk
from nvrag.store import LanceStore, Store
from nvrag.store.faiss_store import FaissStore
from nvrag.store.numpy_store import NumpyStore
from tests.store.test_lancedb_store import manifest

DIM = 16
BACKENDS: dict[str, Callable[[Path], Store]] = {
    "lancedb": lambda p: LanceStore(str(p)),
    "faiss": FaissStore,
    "numpy": NumpyStore,
}
LANGS = ["en", "de", "fr"]
WORDS = ["apple", "banana", "cherry", "grape", "lemon", "mango"]


def corpus(n: int = 60) -> tuple[list[Chunk], np.ndarray]:
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        Chunk(
            chunk_id=f"c{i}",
            doc_id=f"d{i // 3}",
            source=f"/src/{i // 3}.txt",
            chunk_no=i % 3,
            text=f"{WORDS[i % 6]} {WORDS[(i * 7) % 6]} number {i}",
            start=0,
            end=10,
            title=None if i % 4 else f"title {WORDS[i % 6]}",
            metadata={"lang": LANGS[i % 3], "year": 2000 + i % 7, **({"tag": "odd"} if i % 2 else {})},
        )
        for i in range(n)
    ]
    return chunks, vectors


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Store]:
    name = str(request.param)
    return name, BACKENDS[name](tmp_path / name)


def filled(store: Store) -> Store:
    chunks, vectors = corpus()
    table = store.create(manifest(dim=DIM))
    table.upsert(chunks[:30], vectors[:30])
    table.upsert(chunks[30:], vectors[30:])
    table.refresh_indexes()
    return store


def queries() -> np.ndarray:
    rng = np.random.default_rng(5)
    q = rng.normal(size=(8, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_exact_search_equals_the_oracle(backend: tuple[str, Store], oracle: Store) -> None:
    _, store = backend
    table, reference = filled(store).open("docs"), oracle.open("docs")
    for q in queries():
        got, want = table.search(q, 10), reference.search(q, 10)
        assert [h.chunk for h in got] == [h.chunk for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)


@pytest.mark.parametrize(
    "expression",
    [
        "lang = en",
        "year >= 2003",
        "lang != de and year < 2004",
        "year in (2001, 2005)",
        "tag = odd",
        "nope = 1",
        "doc_id = 'd4'",
        "chunk_no = 2",
        "lang in (fr, en) and tag = odd",
        "year = '2002'",
    ],
)
def test_filters_equal_the_oracle(backend: tuple[str, Store], oracle: Store, expression: str) -> None:
    _, store = backend
    table, reference = filled(store).open("docs"), oracle.open("docs")
    where = parse_filters([expression])
    for q in queries()[:3]:
        got = [h.chunk.chunk_id for h in table.search(q, 60, where)]
        want = [h.chunk.chunk_id for h in reference.search(q, 60, where)]
        assert got == want, expression


def test_upsert_delete_get_vectors(backend: tuple[str, Store]) -> None:
    _, store = backend
    table = filled(store).open("docs")
    chunks, vectors = corpus()
    assert table.count() == 60
    table.upsert(chunks[:5], vectors[:5])  # same ids again: replaced, not duplicated
    assert table.count() == 60
    table.delete(["c0", "c1", "missing"])
    assert table.count() == 58 and "c0" not in {c for ids in table.chunk_ids_by_doc().values() for c in ids}
    assert [c.chunk_id for c in table.get(["c5", "c0", "c3"])] == ["c5", "c3"]
    assert table.get(["c5"])[0] == chunks[5]
    got = table.vectors(["c7", "c0"])
    assert list(got) == ["c7"]
    np.testing.assert_allclose(got["c7"], vectors[7], atol=1e-6)
    updated = replace(chunks[9], text="changed text")
    table.upsert([updated], vectors[9:10])
    assert table.get(["c9"])[0].text == "changed text"


def _now_ms() -> datetime:
    """Now, cut to the millisecond as the stores keep it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def test_every_write_records_when_each_chunk_was_written(backend: tuple[str, Store]) -> None:
    _, store = backend
    chunks, vectors = corpus()
    ids = [c.chunk_id for c in chunks]
    before = _now_ms()
    table = filled(store).open("docs")
    after = datetime.now(UTC)
    first = table.indexed_at([*ids, "missing"])
    assert set(first) == set(ids)
    assert all(before <= t <= after for t in first.values())
    time.sleep(0.01)
    table.upsert(chunks[:3], vectors[:3])  # rewritten: their time moves; the others keep theirs
    second = table.indexed_at(ids)
    assert all(second[c] > first[c] for c in ids[:3])
    assert all(second[c] == first[c] for c in ids[3:])


def _forget_indexed_at(store: Store) -> None:
    """Make the index what a version before rows recorded their time wrote: the same table without the column."""
    physical = store.manifest("docs").table
    if isinstance(store, LanceStore):
        store._db.open_table(physical).drop_columns(["indexed_at"])
    else:
        with store._db:  # type: ignore[attr-defined]
            store._db.execute(f'ALTER TABLE "c_{physical}" DROP COLUMN indexed_at')  # type: ignore[attr-defined]


def test_an_index_from_before_the_time_was_recorded_reads_and_gains_it_on_its_next_write(
    backend: tuple[str, Store], tmp_path: Path, oracle: Store
) -> None:
    name, store = backend
    chunks, vectors = corpus()
    filled(store)
    _forget_indexed_at(store)
    old = BACKENDS[name](tmp_path / name).open("docs")  # from disk, as the next version opens it
    assert old.indexed_at([c.chunk_id for c in chunks]) == {}
    assert [h.chunk for h in old.search(queries()[0], 10)] == [
        h.chunk for h in oracle.open("docs").search(queries()[0], 10)
    ]
    assert old.get(["c4"]) == [chunks[4]]
    old.upsert(chunks[:2], vectors[:2])
    assert set(old.indexed_at([c.chunk_id for c in chunks])) == {"c0", "c1"}
    assert old.count() == 60 and old.get(["c0", "c4"]) == [chunks[0], chunks[4]]


def test_text_search_finds_the_same_chunks(backend: tuple[str, Store], oracle: Store) -> None:
    _, store = backend
    table = filled(store).open("docs")
    for word in ("cherry", "mango", "title"):
        want = {c.chunk_id for c in corpus()[0] if word in c.text.split() or (c.title and word in c.title.split())}
        got = {h.chunk.chunk_id for h in table.text_search(word, 100)}
        assert got == want, word
        scores = [h.score for h in table.text_search(word, 100)]
        assert scores == sorted(scores, reverse=True)
    en = {h.chunk.chunk_id for h in table.text_search("cherry", 100, parse_filters(["lang = en"]))}
    assert en == {c.chunk_id for c in corpus()[0] if "cherry" in c.text.split() and c.metadata["lang"] == "en"}


def test_manifests_names_and_rebuilds(backend: tuple[str, Store]) -> None:
    _, store = backend
    filled(store)
    store.create(manifest("other", dim=DIM))
    assert store.list_indexes() == ["docs", "other"]
    staged = store.create_staging(replace(manifest(dim=8), created_at="2026-03-03T00:00:00+00:00"))
    staged.upsert(corpus()[0][:2], np.eye(8, dtype=np.float32)[:2])
    assert store.open("docs").count() == 60 and store.list_indexes() == ["docs", "other"]
    published = store.publish_staging("docs")
    assert published.manifest.dimension == 8 and published.count() == 2
    assert store.open_staging("docs") is None
    store.drop("other")
    assert store.list_indexes() == ["docs"]


def test_reopening_from_disk_gives_the_same_results(backend: tuple[str, Store], tmp_path: Path) -> None:
    name, store = backend
    table = filled(store).open("docs")
    q = queries()[0]
    before = [(h.chunk.chunk_id, round(h.score, 5)) for h in table.search(q, 5)]
    again = BACKENDS[name](tmp_path / name).open("docs")
    assert [(h.chunk.chunk_id, round(h.score, 5)) for h in again.search(q, 5)] == before


def test_a_staging_row_left_by_a_crash_after_the_switch_is_forgotten(backend: tuple[str, Store]) -> None:
    _, store = backend
    filled(store)
    live = store.manifest("docs")
    # the switch committed, the process died before the staging row was deleted: it names the live table
    store._write_manifest(replace(live, table=live.table or live.name), "docs#staging")  # type: ignore[attr-defined]
    assert store.open_staging("docs") is None
    assert store.open("docs").count() == 60  # nothing of the live index was dropped
    assert store.open_staging("docs") is None
