"""Rank fusion and diversification: reciprocal rank fusion (RRF) and maximal marginal relevance (MMR)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

DEFAULT_RRF_K = 60


def rrf(rankings: Sequence[Sequence[str]], k: int = DEFAULT_RRF_K) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (k + rank), ranks from 1 (Cormack et al. 2009).

    Ties keep the order of first appearance (earlier lists first), so the result is deterministic.
    """
    if k < 0:
        raise ValueError(f"the RRF constant must be >= 0 (got {k})")
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))


def mmr(query: npt.NDArray[np.float32], candidates: npt.NDArray[np.float32], k: int, lambda_: float = 0.5) -> list[int]:
    """Maximal marginal relevance (Carbonell & Goldstein 1998) over L2-normalised vectors.

    Picks, one at a time, the candidate maximising ``lambda * cos(q, d) - (1 - lambda) * max cos(d, picked)``.
    lambda 1 is plain relevance order; lambda 0 is maximal diversity. Returns candidate indices in pick order.
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"MMR lambda must be between 0 and 1 (got {lambda_})")
    if len(candidates) == 0 or k <= 0:
        return []
    relevance = candidates @ query  # (n,)
    similarity = candidates @ candidates.T  # (n, n)
    picked: list[int] = []
    redundancy = np.full(len(candidates), -np.inf)
    available = np.ones(len(candidates), dtype=bool)
    for _ in range(min(k, len(candidates))):
        penalty = np.where(np.isinf(redundancy), 0.0, redundancy)
        objective = np.where(available, lambda_ * relevance - (1.0 - lambda_) * penalty, -np.inf)
        best = int(np.argmax(objective))  # first index wins ties: stable with the input order
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, similarity[best])
    return picked
