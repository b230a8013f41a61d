"""A deterministic embedder whose vectors can be computed by hand, registered like a real model.

Tokens are runs of word characters. A token of length n adds 1 to dimension ``min(n, dim) - 1``; the vector is
then L2-normalised. "a bb bb" → [1, 2, 0, ...] / sqrt(5). A query's instruction is prepended to it as text
(template "{instruction}: "), so instructions change query vectors in ways a test can predict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from nvrag.embedder.base import Embedder, FloatArray, ModelInfo

FAKE_NAME = "nvrag/fake-wordlen"
_WORD = re.compile(r"\w+")


def fake_info(dimension: int = 8, max_tokens: int = 64) -> ModelInfo:
    return ModelInfo(
        name=FAKE_NAME,
        revision="1",
        dimension=dimension,
        max_tokens=max_tokens,
        query_template="{instruction}: ",
        document_template="",
        license="MIT",
        default_instruction="query",
    )


class WordLengthEmbedder(Embedder):
    """Word-length histogram vectors. For tests and demos of exact rankings; it has no semantics."""

    def __init__(self, dimension: int = 8, max_tokens: int = 64, *, batch_tokens: int = 256) -> None:
        super().__init__(fake_info(dimension, max_tokens), batch_tokens=batch_tokens)
        self.forward_calls: list[int] = []  # batch sizes, so tests can see the batching

    @property
    def special_tokens(self) -> int:
        return 0

    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        return [[len(w) for w in _WORD.findall(prefix + t)][: self.info.max_tokens] for t in texts]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        self.forward_calls.append(len(batch))
        out = np.zeros((len(batch), self.dimension), dtype=np.float32)
        for row, lengths in enumerate(batch):
            for n in lengths:
                out[row, min(n, self.dimension) - 1] += 1.0
        return out
