"""RRF and MMR arithmetic, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvrag.retriever import mmr, rrf


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert fused == [
        ("a", pytest.approx(1 / 61 + 1 / 62)),
        ("c", pytest.approx(1 / 63 + 1 / 61)),
        ("b", pytest.approx(1 / 62)),
    ]


def test_rrf_ties_keep_first_appearance_and_k_changes_weights() -> None:
    assert [x for x, _ in rrf([["a", "b"], ["b", "a"]], k=60)] == ["a", "b"]  # equal sums
    assert rrf([["a"], []], k=0) == [("a", 1.0)]
    with pytest.raises(ValueError, match=">= 0"):
        rrf([["a"]], k=-1)


def unit(*xy: tuple[float, float]) -> np.ndarray:
    a = np.array(xy, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_mmr_trades_relevance_for_diversity() -> None:
    query = unit((1, 0))[0]
    # 0 and 1 are near-duplicates close to the query; 2 is less relevant but different
    candidates = unit((1, 0.1), (1, 0.12), (0.6, 0.8))
    assert mmr(query, candidates, 3, lambda_=1.0) == [0, 1, 2]  # relevance order
    # second pick at lambda 0.3: candidate 1 scores 0.3 * 0.9929 - 0.7 * 0.9998 = -0.402,
    # candidate 2 scores 0.3 * 0.6 - 0.7 * 0.6766 = -0.294: the different one wins
    assert mmr(query, candidates, 2, lambda_=0.3) == [0, 2]
    # at lambda 0.5 relevance still wins: -0.0035 against -0.038
    assert mmr(query, candidates, 2, lambda_=0.5) == [0, 1]


def test_mmr_edges() -> None:
    query = unit((1, 0))[0]
    assert mmr(query, np.zeros((0, 2), dtype=np.float32), 3) == []
    assert mmr(query, unit((0, 1), (1, 0)), 5, lambda_=0.0)[0] == 0  # nothing picked yet: no penalty, ties to first
    with pytest.raises(ValueError, match="between 0 and 1"):
        mmr(query, unit((1, 0)), 1, lambda_=1.5)
    assert math.isclose(float(np.linalg.norm(query)), 1.0, rel_tol=1e-6)
