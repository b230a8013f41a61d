"""Query-like probe vectors for the ANN recall probe (nvrag/retriever/probing.py), with the fake embedder."""

from __future__ import annotations

import numpy as np

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer
from nvrag.retriever import Retriever
from nvrag.retriever.probing import SPAN_WORDS, probe_queries, query_spans, wants_probe
from nvrag.schema import Document
from nvrag.store import LanceStore

TEXTS = [
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
    "alpha beta gamma",
    "",
]


def test_spans_are_short_runs_of_words_from_the_texts() -> None:
    spans = query_spans(TEXTS, 50, seed=3)
    assert len(spans) == 50  # more spans than texts: texts are chosen again
    assert spans == query_spans(TEXTS, 50, seed=3) and spans != query_spans(TEXTS, 50, seed=4)
    for source, span in spans:
        words, text = span.split(), TEXTS[source].split()
        assert any(text[i : i + len(words)] == words for i in range(len(text)))  # a run of its text's words
        assert SPAN_WORDS[0] <= len(words) <= SPAN_WORDS[1] or words == text  # a short text is taken whole
    assert {span.split()[0] for _, span in spans} - {"alpha"}  # spans start at more than one place
    assert {source for source, _ in spans} == {0, 1}  # the empty text gives none
    assert query_spans(["", "  "], 5) == []


def test_probe_vectors_are_spans_of_stored_chunks_embedded_as_the_index_queries(
    store: LanceStore, fake: WordLengthEmbedder
) -> None:
    lengths = (1, 2, 3, 4, 6, 7)  # no 5-letter word: only the prompt's "query" counts in dimension 4
    docs = [Document(f"d{i}", " ".join("x" * lengths[(i + j) % 6] for j in range(9)), f"s{i}") for i in range(30)]
    Indexer(store, fake).index("t", docs)
    retriever = Retriever(store.open("t"), fake)
    probe = probe_queries(retriever, 12)
    vectors = probe.vectors
    assert vectors.shape == (12, fake.dimension) and len(probe.sources) == 12
    # every probe is, exactly, the query embedding ("query: " + span) of a run of words of some stored chunk
    prefix = fake.query_prefix(None, store.open("t").manifest.query_template)
    assert prefix == "query: "
    candidates = {
        " ".join(words[a:b])
        for doc in docs
        for words in [doc.text.split()]
        for a in range(len(words))
        for b in range(a + 1, len(words) + 1)
    }
    ordered = sorted(candidates)
    embedded = fake.embed_with_prefix(ordered, prefix)
    stored = {c.chunk_id: c.text for c in store.open("t").get(list(probe.sources))}
    for v, source in zip(vectors, probe.sources, strict=True):
        assert np.isclose(embedded @ v, 1.0, atol=1e-6).any()
        assert v[4] > 0  # embedded in query mode, prompt and all
        spans = [
            " ".join(w[a:b]) for w in [stored[source].split()] for a in range(len(w)) for b in range(a + 1, len(w) + 1)
        ]
        assert np.isclose(fake.embed_with_prefix(spans, prefix) @ v, 1.0, atol=1e-6).any()  # cut from its source


def test_only_a_probing_store_above_the_ann_size_asks_for_queries(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", [Document("d", "a few words", "s")])
    table = store.open("t")
    assert not wants_probe(table, "ivf-pq")  # one row: it stays exact, nothing to probe
