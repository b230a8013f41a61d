"""Matryoshka vectors from a loaded model: its vectors cut to their leading dimensions, then normalised.

A view over one loaded embedder, so a server that holds a model once can serve indexes built at several
``--dimensions`` (and /v1/embeddings requests with ``dimensions``) without loading it again. Cutting a unit
vector and normalising again equals cutting the pooled vector and normalising once: only the direction counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from nvrag.embedder.base import Embedder, FloatArray, normalise
from nvrag.errors import ConfigError


def cut(vectors: FloatArray, dimensions: int) -> FloatArray:
    """Rows cut to their first ``dimensions`` components and normalised again."""
    return normalise(vectors[:, :dimensions])


def check_cut(embedder: Embedder, dimensions: int) -> None:
    """ConfigError unless ``embedder`` is Matryoshka-trained and ``dimensions`` is within its width."""
    if not embedder.info.matryoshka:
        raise ConfigError(
            f"dimensions {dimensions}: {embedder.name} is not Matryoshka-trained; its vectors are "
            f"{embedder.dimension} dimensions"
        )
    if not 1 <= dimensions <= embedder.dimension:
        raise ConfigError(f"dimensions {dimensions}: {embedder.name} vectors can be cut to 1 to {embedder.dimension}")


def matryoshka(embedder: Embedder, dimensions: int) -> Embedder:
    """``embedder`` itself at its own width, else a view cutting its vectors to ``dimensions``."""
    if dimensions == embedder.dimension:
        return embedder
    check_cut(embedder, dimensions)
    return MatryoshkaView(embedder, dimensions)


class MatryoshkaView(Embedder):
    def __init__(self, inner: Embedder, dimensions: int) -> None:
        super().__init__(
            replace(inner.info, dimension=dimensions),
            batch_tokens=inner.batch_tokens,
            max_batch_size=inner.max_batch_size,
        )
        self.inner = inner
        self.notes = inner.notes

    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        return self.inner.tokenize(texts, prefix)

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        return self.inner.prepare_for_serving(busy)

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        return self.inner.forward(batch, prefix)[:, : self.dimension]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_spans(text)

    @property
    def special_tokens(self) -> int:
        return self.inner.special_tokens

    def _embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        vectors, tokens = self.inner.embed_counted(texts, prefix)  # through the inner's scheduler, if any
        return cut(vectors, self.dimension), tokens
