"""Dense retrieval with the hand-computable fake embedder: exact rankings and scores."""

from __future__ import annotations

import math

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError, ModelMismatchError
from nvrag.indexer import Indexer
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore

# word-length histograms (dimension = length - 1):
#   short: "a b c"        -> e0 * 3      -> unit e0
#   mixed: "a bb"         -> e0 + e1     -> (e0 + e1) / sqrt 2
#   long:  "ccc dddd"     -> e2 + e3     -> (e2 + e3) / sqrt 2
DOCS = [
    Document("short", "a b c", "s1"),
    Document("mixed", "a bb", "s2"),
    Document("long", "ccc dddd", "s3"),
]


@pytest.fixture
def retriever(store: LanceStore, fake: WordLengthEmbedder) -> Retriever:
    Indexer(store, fake).index("t", DOCS)
    return Retriever(store.open("t"), fake)


def test_ranking_and_scores_are_the_hand_computed_cosines(retriever: Retriever) -> None:
    # query "x" with instruction "q": "q: x" -> two 1-letter words -> e0
    hits = retriever.search("x", k=3, instruction="q")
    assert [(h.rank, h.doc_id) for h in hits] == [(1, "short"), (2, "mixed"), (3, "long")]
    assert [h.score for h in hits] == pytest.approx([1.0, 1 / math.sqrt(2), 0.0], abs=1e-6)
    top = hits[0]
    assert (top.text, top.source, top.start, top.end, top.chunk_no) == ("a b c", "s1", 0, 5, 0)


def test_the_instruction_changes_the_query_vector(retriever: Retriever) -> None:
    # "dddd: ccc" -> e3 + e2 -> matches "long" exactly
    hits = retriever.search("ccc", k=1, instruction="dddd")
    assert hits[0].doc_id == "long" and hits[0].score == pytest.approx(1.0, abs=1e-6)


def test_k_limits_and_bounds(retriever: Retriever) -> None:
    assert len(retriever.search("x", k=2, instruction="q")) == 2
    for bad in (0, 1001):
        with pytest.raises(ConfigError, match="k must be between 1 and 1000"):
            retriever.search("x", k=bad)


def test_search_many_embeds_queries_together(retriever: Retriever, fake: WordLengthEmbedder) -> None:
    calls = len(fake.forward_calls)
    results = retriever.search_many(["x", "ccc"], k=1, instruction="dddd")
    assert len(fake.forward_calls) == calls + 1
    # "dddd: x" -> (e0 + e3) / sqrt 2: cosine 0.707 with "short", 0.5 with "mixed" and "long"
    assert [r[0].doc_id for r in results] == ["short", "long"]
    assert results[0][0].score == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_a_retriever_with_another_model_is_refused(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", DOCS)
    with pytest.raises(ModelMismatchError, match="built with nvrag/fake-wordlen"):
        Retriever(store.open("t"), WordLengthEmbedder(dimension=4))
