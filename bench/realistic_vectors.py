"""Vectors with real embeddings' neighbour structure, at sizes no local corpus has (bench/search_ann.py --realistic).

Real vectors: the bundled all-MiniLM-L6-v2's passage vectors of every local text (each NFCorpus document's title
and sentences, each demo document's paragraphs: about 40,000), and held-out queries: NFCorpus's queries (3,237
real questions, never part of the stored set), embedded as queries. Both are cached in a folder as .npy files.

Expansion to N vectors (the documented procedure; `validate` measures how well it keeps recall behaviour):
every real vector is kept, and each synthetic one is made from a real seed ``a`` and one of its K_SEED nearest
real neighbours ``b``: a point at a uniform random place on the segment from a to b, plus Gaussian noise whose
length is NOISE times the segment's length, renormalised. So new points fill in the neighbourhoods the real
vectors already have (like SMOTE), never a direction the data does not use, and clusters, gaps and density
contrasts are those of the real texts. Larger dimensions (NV-Embed-v2's 4,096) are the 384-d vectors lifted by
a random orthonormal map: every cosine, so every neighbour, is exactly kept, while an index sees 4,096 mixed
coordinates.

Validation: at the real vectors' own size n, an index over the real vectors is compared with one over n
synthetic vectors expanded (by the same factor as the full run) from a random n/factor of them, searched with
the same held-out queries: the exact neighbours' cosines (1st, 10th, and the gap between the 10th and 11th,
which decides how hard an approximate order is) and ANN recall@10 at the same search settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.retriever.probing import query_spans
from nvrag.store.probes import ProbeQueries

F32 = npt.NDArray[np.float32]
K_SEED = 10  # a synthetic point lies between a real vector and one of its K_SEED nearest real neighbours
NOISE = 0.25  # Gaussian noise, as a share of that segment's length
MIN_WORDS = 6  # shorter sentences are joined to the next


def _sentences(text: str) -> Iterator[str]:
    pending = ""
    for part in re.split(r"(?<=[.!?])\s+", text):
        pending = f"{pending} {part}".strip()
        if len(pending.split()) >= MIN_WORDS:
            yield pending
            pending = ""
    if pending:
        yield pending


def real_texts(dataset: Path, demo: Path) -> list[str]:
    """Every local text as passages: NFCorpus titles and sentences, demo paragraphs; duplicates once."""
    texts: dict[str, None] = {}
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as corpus:
        for line in corpus:
            doc = json.loads(line)
            if doc.get("title"):
                texts[doc["title"].strip()] = None
            texts.update(dict.fromkeys(_sentences(doc.get("text", ""))))
    with demo.open(encoding="utf-8") as docs:
        for line in docs:
            for paragraph in json.loads(line).get("text", "").split("\n\n"):
                if len(paragraph.split()) >= MIN_WORDS:
                    texts[paragraph.strip()] = None
    return list(texts)


def query_texts(dataset: Path) -> list[str]:
    with (dataset / "queries.jsonl").open(encoding="utf-8") as queries:
        return [json.loads(line)["text"] for line in queries]


def embedded(cache: Path, dataset: Path, demo: Path) -> tuple[F32, F32]:
    """(passage vectors, held-out query vectors), embedded once with the bundled model and cached."""
    cache.mkdir(parents=True, exist_ok=True)
    passages, queries = cache / "passages.npy", cache / "queries.npy"
    if not (passages.exists() and queries.exists()):
        embedder = MiniLMEmbedder()
        texts = real_texts(dataset, demo)
        print(f"embedding {len(texts)} passages and the queries with {embedder.name} (cached in {cache})", flush=True)
        np.save(passages, np.asarray(embedder.embed_documents(texts), dtype=np.float32))
        np.save(queries, np.asarray(embedder.embed_queries(query_texts(dataset)), dtype=np.float32))
    return np.load(passages), np.load(queries)


def nearest(vectors: F32, k: int, queries: F32 | None = None, block: int = 4096) -> npt.NDArray[np.int64]:
    """Indices of each query's ``k`` nearest ``vectors`` by cosine (unit vectors); without ``queries``, each
    vector's own neighbours, itself left out."""
    own = queries is None
    q = vectors if queries is None else queries
    out = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), block):
        scores = q[start : start + block] @ vectors.T
        if own:
            rows = np.arange(len(scores))
            scores[rows, rows + start] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + block] = np.take_along_axis(top, order, axis=1)
    return out


def expand(real: F32, size: int, seed: int = 0) -> F32:
    """``size`` unit vectors: every real one, then synthetic points between real neighbours (module docstring)."""
    rng = np.random.default_rng(seed)
    extra = size - len(real)
    if extra <= 0:
        return real[rng.choice(len(real), size, replace=False)]
    neighbours = nearest(real, K_SEED)
    out = np.empty((size, real.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    for start in range(0, extra, 200_000):
        n = min(200_000, extra - start)
        a = rng.integers(0, len(real), n)
        b = neighbours[a, rng.integers(0, K_SEED, n)]
        segment = real[b] - real[a]
        points = real[a] + rng.uniform(0, 1, (n, 1)).astype(np.float32) * segment
        length = np.linalg.norm(segment, axis=1, keepdims=True)
        noise = rng.normal(size=points.shape).astype(np.float32) / np.sqrt(real.shape[1])
        points += NOISE * length * noise
        out[len(real) + start : len(real) + start + n] = points / np.linalg.norm(points, axis=1, keepdims=True)
    return out


def lift(vectors: F32, dim: int, seed: int = 0) -> F32:
    """``vectors`` in ``dim`` dimensions by a random orthonormal map: every cosine kept exactly."""
    if dim == vectors.shape[1]:
        return vectors
    basis, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, vectors.shape[1])))
    return (vectors @ basis.T.astype(np.float32)).astype(np.float32)


def neighbour_profile(vectors: F32, queries: F32) -> tuple[float, float, float]:
    """Mean cosine of each query's 1st and 10th nearest vector, and the mean gap between its 10th and 11th."""
    top = nearest(vectors, 11, queries)
    cos = np.einsum("qd,qkd->qk", queries, vectors[top])
    return float(cos[:, 0].mean()), float(cos[:, 9].mean()), float((cos[:, 9] - cos[:, 10]).mean())


def probe_vectors(texts: list[str], dim: int, count: int = 100) -> ProbeQueries:
    """The recall probe's query-like vectors as `nvrag optimize` makes them (spans of the texts, embedded as
    queries, lifted to ``dim``), each with its text's chunk id in the bench's tables (c{i}: text i's vector)."""
    spans = query_spans(texts, count)
    vectors = np.asarray(MiniLMEmbedder().embed_queries([text for _, text in spans]), dtype=np.float32)
    return ProbeQueries(lift(vectors, dim), [f"c{i}" for i, _ in spans])
