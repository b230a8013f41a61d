"""Rerankers whose scores you can compute by hand, for exact tests of what sits around a reranker."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nvrag.embedder.base import FloatArray
from nvrag.reranker import PairInput, Reranker, RerankerInfo


class SharedWords(Reranker):
    """Score = how many of the document's words are in the query. ``seen``: the documents of each call."""

    def __init__(self) -> None:
        super().__init__(RerankerInfo("shared-words", "1", "cross-encoder", 512, "MIT", "shared words"))
        self.seen: list[list[str]] = []

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[PairInput]:
        self.seen.append(list(documents))
        words = set(query.split())
        return [PairInput(ids=[sum(w in words for w in d.split())] + [0] * len(d.split())) for d in documents]

    def forward(self, batch: Sequence[PairInput]) -> FloatArray:
        return np.array([p.ids[0] for p in batch], dtype=np.float32)


class ShortestFirst(Reranker):
    """Score = minus the document's length in characters: the shortest passage first."""

    def __init__(self) -> None:
        super().__init__(RerankerInfo("shortest-first", "1", "cross-encoder", 512, "MIT", "-characters"))

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[PairInput]:
        return [PairInput(ids=[len(d)]) for d in documents]

    def forward(self, batch: Sequence[PairInput]) -> FloatArray:
        return np.array([-p.ids[0] for p in batch], dtype=np.float32)
