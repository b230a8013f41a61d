"""Query-like probe vectors for an ANN index's recall probe (store/lance_ann.py).

A real query is a few words, embedded with the index's query prompt, and lies farther from every stored passage
than a passage lies from its neighbours; an index tuned on its own vectors reaches its recall target there and
falls short on queries. So the probe's queries are made like real ones, from the index itself: a span of
SPAN_WORDS words at a random place in a randomly chosen chunk, embedded as a query with the prompt the index
recorded; the probe leaves that chunk out of the span's neighbours (the span is a copy of its text, which no
real query is). No text leaves the index and nothing is written.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from nvrag.retriever.dense import Retriever
from nvrag.store import Table
from nvrag.store.lance_ann import ANN_MIN_ROWS, PROBE_QUERIES
from nvrag.store.probes import ProbeQueries

SPAN_WORDS = (4, 12)  # a probe query's length in words: at least, at most
PROBES = PROBE_QUERIES


def wants_probe(table: Table, kind: str) -> bool:
    """Whether building ``kind`` on ``table`` runs a recall probe that query-like vectors would serve."""
    probes = getattr(table, "probes_recall", False) and table.manifest.quantization != "binary"
    return bool(probes) and kind != "none" and table.count() >= ANN_MIN_ROWS


def query_spans(texts: Sequence[str], count: int = PROBES, seed: int = 0) -> list[tuple[int, str]]:
    """``count`` short spans of ``texts`` (chosen at random, with repeats when there are fewer texts), each with
    the index of the text it was cut from."""
    rng = random.Random(seed)
    usable = [(i, t.split()) for i, t in enumerate(texts) if t.split()]
    spans = []
    for _ in range(count if usable else 0):
        source, words = rng.choice(usable)
        length = min(len(words), rng.randint(*SPAN_WORDS))
        start = rng.randint(0, len(words) - length)
        spans.append((source, " ".join(words[start : start + length])))
    return spans


def probe_queries(retriever: Retriever, count: int = PROBES, seed: int = 0) -> ProbeQueries:
    """``count`` query-like probes for ``retriever``'s index: spans of its chunks embedded as its queries, each
    with the chunk it was cut from (which the probe leaves out)."""
    table = retriever.table
    ids = sorted(chunk for chunks in table.chunk_ids_by_doc().values() for chunk in chunks)
    chunks = table.get(random.Random(seed).sample(ids, min(count, len(ids))))
    spans = query_spans([chunk.text for chunk in chunks], count, seed)
    prefix = retriever.embedder.query_prefix(None, table.manifest.query_template)
    vectors = retriever.embedder.embed_with_prefix([text for _, text in spans], prefix)
    return ProbeQueries(np.asarray(vectors, dtype=np.float32), [chunks[i].chunk_id for i, _ in spans])
