"""BM25, hybrid (RRF), filters, minimum score and MMR through the Retriever, on real LanceDB."""

from __future__ import annotations

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError, FilterError
from nvrag.indexer import Indexer
from nvrag.retriever import Retriever, parse_filters
from nvrag.schema import Document
from nvrag.store import LanceStore

DOCS = [
    Document("A", "apple banana", "s/A", metadata={"lang": "en", "year": 2020}),
    Document("B", "apple pie", "s/B", metadata={"lang": "de", "year": 2021}),
    Document("C", "cherry tart", "s/C", metadata={"lang": "en", "year": 2022, "kind": "dessert"}),
    Document("D", "banana bread banana", "s/D", metadata={"lang": "fr", "year": "unknown"}),
]


@pytest.fixture
def retriever(store: LanceStore, fake: WordLengthEmbedder) -> Retriever:
    Indexer(store, fake).index("t", DOCS)
    return Retriever(store.open("t"), fake)


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.doc_id for h in hits]


def test_bm25_finds_words_and_keeps_its_own_rank_and_score(retriever: Retriever) -> None:
    hits = retriever.search("banana", k=5, mode="bm25")
    assert set(ids(hits)) == {"A", "D"}
    assert [h.bm25_rank for h in hits] == [1, 2] and [h.dense_rank for h in hits] == [None, None]
    assert hits[0].score == hits[0].bm25_score and hits[0].score >= hits[1].score > 0
    assert ids(retriever.search("zucchini", k=5, mode="bm25")) == []


def test_hybrid_scores_are_the_rrf_of_each_retrievers_rank(retriever: Retriever) -> None:
    dense = retriever.search("apple", k=4, instruction="q")
    bm25 = retriever.search("apple", k=4, mode="bm25")
    hybrid = retriever.search("apple", k=4, instruction="q", mode="hybrid", rrf_k=10)
    dense_rank = {h.doc_id: h.rank for h in dense}
    bm25_rank = {h.doc_id: h.rank for h in bm25}
    assert set(ids(hybrid)) == set(dense_rank)
    for h in hybrid:
        assert h.dense_rank == dense_rank.get(h.doc_id) and h.bm25_rank == bm25_rank.get(h.doc_id)
        expected = sum(1 / (10 + r) for r in (h.dense_rank, h.bm25_rank) if r is not None)
        assert h.score == pytest.approx(expected)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    assert [h.rank for h in hybrid] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("lang = en", {"A", "C"}),
        ("year >= 2021", {"B", "C"}),
        ("year in (2020, 2022)", {"A", "C"}),
        ("lang != en", {"B", "D"}),
        ("lang = en and year > 2020", {"C"}),
        ("doc_id = 'B'", {"B"}),
        ("chunk_no = 0", {"A", "B", "C", "D"}),
        ("kind = dessert", {"C"}),
        ("year = 'unknown'", {"D"}),
    ],
)
@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_filters_apply_before_ranking(retriever: Retriever, expression: str, expected: set[str], mode: str) -> None:
    hits = retriever.search("apple banana", k=4, instruction="q", mode=mode, filters=parse_filters([expression]))  # type: ignore[arg-type]
    assert set(ids(hits)) == expected


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_a_field_no_document_has_is_named(retriever: Retriever, mode: str) -> None:
    with pytest.raises(FilterError, match="has the field 'nope'; its fields: chunk_no, doc_id, source, title, "):
        retriever.search("apple banana", k=4, instruction="q", mode=mode, filters=parse_filters(["nope = x"]))  # type: ignore[arg-type]


def test_a_filter_of_the_wrong_type_for_a_column_is_named(retriever: Retriever) -> None:
    with pytest.raises(FilterError, match="filter on 'doc_id': its values are text"):
        retriever.search("x", filters=parse_filters(["doc_id > 3"]))


def test_min_score(retriever: Retriever) -> None:
    hits = retriever.search("apple banana", k=4, instruction="q")
    cut = hits[1].score
    kept = retriever.search("apple banana", k=4, instruction="q", min_score=cut)
    assert ids(kept) == [h.doc_id for h in hits if h.score >= cut]


def test_mmr_reorders_for_diversity(retriever: Retriever) -> None:
    plain = retriever.search("banana banana", k=4, instruction="q")
    assert ids(retriever.search("banana banana", k=4, instruction="q", mmr_lambda=1.0)) == ids(plain)
    diverse = retriever.search("banana banana", k=2, instruction="q", mmr_lambda=0.0)
    assert diverse[0].doc_id == plain[0].doc_id
    assert diverse[1].score == pytest.approx(min(h.score for h in plain))  # the least similar comes second


def test_bad_options(retriever: Retriever) -> None:
    with pytest.raises(ConfigError, match="unknown search mode 'sparse'"):
        retriever.search("x", mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="MMR lambda must be between 0 and 1"):
        retriever.search("x", mmr_lambda=2.0)
    with pytest.raises(ConfigError, match="the limit is 10000"):
        retriever.search("x" * 10_001)
