"""The rerank stage of a search: exactly the first stage's candidates, ordered by the reranker's scores of
their texts, each keeping its retrieval rank and score. A reranker you can compute by hand (shared words)
checks the logic; the shared BERT cross-encoder fixture checks it with a real model."""

from __future__ import annotations

import numpy as np
import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError
from nvrag.indexer import Indexer
from nvrag.reranker import load_reranker
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore
from tests.conftest import REPO
from tests.reranker.fakes import SharedWords

BERT = REPO.parent / "shared" / "fixtures" / "family" / "bert-cross-encoder"
DOCS = [
    Document("d1", "a b c", "s1"),
    Document("d2", "a bb", "s2"),
    Document("d3", "ccc dddd", "s3"),
    Document("d4", "x yy zzz", "s4"),
    Document("d5", "zzz zzz zzz", "s5"),
]


@pytest.fixture
def retriever(store: LanceStore, fake: WordLengthEmbedder) -> Retriever:
    Indexer(store, fake).index("t", DOCS)
    return Retriever(store.open("t"), fake)


def test_the_first_stage_candidates_reordered_by_the_reranker(retriever: Retriever) -> None:
    first = retriever.search("x", k=4, instruction="q")
    reranker = SharedWords()
    hits = retriever.search("zzz", k=2, instruction="q", reranker=reranker, rerank_depth=4)
    # the query for the reranker is the search's; the first stage used "q: zzz" -> (e0 + e2) / sqrt 2
    stage = retriever.search("zzz", k=4, instruction="q")
    assert reranker.seen == [[h.text for h in stage]]  # exactly the first stage's candidates, in its order
    # shared words with "zzz": d5 has 3, d4 has 1, the others 0
    assert [(h.doc_id, h.rank, h.rerank_score) for h in hits] == [("d5", 1, 3.0), ("d4", 2, 1.0)]
    by_id = {h.doc_id: h for h in stage}
    for hit in hits:
        assert (hit.retrieval_rank, hit.score) == (by_id[hit.doc_id].rank, by_id[hit.doc_id].score)
    assert all(h.rerank_score is None and h.retrieval_rank is None for h in first)


def test_a_candidate_outside_the_depth_is_never_returned(retriever: Retriever) -> None:
    stage = retriever.search("zzz", k=2, instruction="q")
    hits = retriever.search("zzz", k=2, instruction="q", reranker=SharedWords(), rerank_depth=2)
    assert {h.doc_id for h in hits} == {h.doc_id for h in stage}


def test_ties_keep_the_first_stage_order(retriever: Retriever) -> None:
    stage = retriever.search("q", k=5, instruction="q")
    hits = retriever.search("q", k=5, instruction="q", reranker=SharedWords(), rerank_depth=5)  # all score 0
    assert [h.doc_id for h in hits] == [h.doc_id for h in stage]
    assert [h.retrieval_rank for h in hits] == [1, 2, 3, 4, 5]


def test_hybrid_and_bm25_candidates_rerank_too(retriever: Retriever) -> None:
    for mode in ("bm25", "hybrid"):
        hits = retriever.search("zzz", k=1, mode=mode, reranker=SharedWords(), rerank_depth=3)  # type: ignore[arg-type]
        assert hits[0].doc_id == "d5" and hits[0].rerank_score == 3.0


def test_depth_and_mmr_are_checked(retriever: Retriever) -> None:
    with pytest.raises(ConfigError, match="rerank depth must be between k"):
        retriever.search("x", k=5, reranker=SharedWords(), rerank_depth=4)
    with pytest.raises(ConfigError, match="MMR and reranking"):
        retriever.search("x", k=2, reranker=SharedWords(), mmr_lambda=0.5)


def test_a_real_cross_encoder_orders_the_candidates_by_its_scores(retriever: Retriever) -> None:
    reranker = load_reranker(BERT, dtype="float32")
    stage = retriever.search("ccc", k=5, instruction="q")
    hits = retriever.search("ccc", k=5, instruction="q", reranker=reranker, rerank_depth=5)
    scores = reranker.score("ccc", [h.text for h in stage])
    expected = [stage[i].doc_id for i in np.argsort(-scores, kind="stable")]
    assert [h.doc_id for h in hits] == expected
    assert [h.rerank_score for h in hits] == pytest.approx(sorted(scores.tolist(), reverse=True), abs=1e-6)


def test_the_reranker_reads_the_title_and_text_as_the_index_embedded_them(
    store: LanceStore, fake: WordLengthEmbedder
) -> None:
    Indexer(store, fake).index("titled", [Document("t1", "zzz body", "s1", title="Heading")])
    reranker = SharedWords()
    Retriever(store.open("titled"), fake).search("zzz", k=1, reranker=reranker, rerank_depth=1)
    assert reranker.seen == [["Heading\nzzz body"]]
