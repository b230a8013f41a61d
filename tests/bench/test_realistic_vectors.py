"""bench/realistic_vectors.py, the expansion behind `bench/search_ann.py --realistic`: every real vector kept,
every new one between a real vector and one of its real neighbours, cosines kept by the lift, and the texts and
held-out queries it embeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import realistic_vectors as realistic  # noqa: E402


def clustered(n: int = 400, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    points = centres[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_nearest_is_the_brute_force_order_without_the_vector_itself() -> None:
    vectors = clustered()
    got = realistic.nearest(vectors, 5, block=64)  # blocks that do not divide the rows
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    np.testing.assert_array_equal(got, np.argsort(-scores, axis=1, kind="stable")[:, :5])
    queries = clustered(7, seed=1)
    np.testing.assert_array_equal(realistic.nearest(vectors, 3, queries), np.argsort(-(queries @ vectors.T))[:, :3])


def test_expansion_keeps_the_real_vectors_and_adds_points_near_real_neighbours() -> None:
    real = clustered()
    out = realistic.expand(real, 2000, seed=3)
    assert out.shape == (2000, real.shape[1]) and out.dtype == np.float32
    np.testing.assert_array_equal(out[: len(real)], real)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # each new point's nearest real vector is as close as that real vector's K_SEED-th real neighbour (it lies
    # on a segment to one, plus a little noise); a random unit vector is not
    neighbours = realistic.nearest(real, realistic.K_SEED)
    kth = np.einsum("nd,nd->n", real, real[neighbours[:, -1]])  # each real vector's K-th neighbour cosine
    new = out[len(real) :]
    best = (new @ real.T).argmax(axis=1)
    assert np.mean(np.einsum("nd,nd->n", new, real[best]) >= kth[best] - 0.05) > 0.95
    noise = np.random.default_rng(5).normal(size=new.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert np.mean((noise @ real.T).max(axis=1) >= kth[(noise @ real.T).argmax(axis=1)] - 0.05) < 0.2
    np.testing.assert_array_equal(realistic.expand(real, 2000, seed=3), out)  # reproducible


def test_the_lift_keeps_every_cosine() -> None:
    vectors = clustered(50)
    lifted = realistic.lift(vectors, 256)
    assert lifted.shape == (50, 256)
    np.testing.assert_allclose(lifted @ lifted.T, vectors @ vectors.T, atol=1e-5)


def test_texts_are_sentences_titles_and_paragraphs_once(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "1", "title": "A title", "text": "First sentence has six words here. Short one. And the rest."},
        {"_id": "2", "title": "A title", "text": "First sentence has six words here."},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "what is it"}) + "\n", encoding="utf-8")
    demo = tmp_path / "demo.jsonl"
    demo.write_text(json.dumps({"id": "d", "text": "one two three four five six\n\ntoo short"}) + "\n", "utf-8")
    assert realistic.real_texts(tmp_path, demo) == [
        "A title",
        "First sentence has six words here.",
        "Short one. And the rest.",  # a short sentence joins the next
        "one two three four five six",
    ]
    assert realistic.query_texts(tmp_path) == ["what is it"]
