"""The Reranker interface: a query and documents in, one relevance score per document out, in input order.

A concrete reranker supplies ``encode`` (the query and each document → the model's input for that pair,
truncated to its limit the way its reference truncates) and ``forward`` (one batch of pairs → scores). The base
supplies the rest: length-sorted batching under a token budget (the embedders' ``token_budget_batches``),
input order restored, the token count an API bills, and ``rerank`` (results sorted by score, ties by input
order, cut to ``top_n``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nvrag.embedder.base import FloatArray, token_budget_batches

RerankerKind = Literal["cross-encoder", "llm"]


@dataclass(frozen=True)
class RerankerInfo:
    """What a reranker is, for messages, /v1/models and a search's report."""

    name: str
    revision: str
    kind: RerankerKind
    max_tokens: int  # the model's input limit per pair, template and special tokens included
    license: str
    score: str  # what a score is, in words: "the logit", "sigmoid of the logit", "P(yes)"
    compute_dtype: str = "float32"
    source: str = ""  # the checkpoint folder
    default_instruction: str | None = None  # None: the model takes no instruction


@dataclass(frozen=True)
class Checkpoint:
    """What a reranker is built from: its folder and parsed config.json, the name and license indexes and
    answers show, and how to run it (the loader decides these; loading.py)."""

    folder: Path
    config: dict[str, Any]
    name: str
    revision: str
    license: str
    device: str = "cpu"
    dtype: str = "float32"  # float32 | float16 | bfloat16
    max_length: int | None = None
    batch_tokens: int = 8192
    attention: str = "auto"

    @property
    def where(self) -> str:
        return f"{self.folder}/config.json"

    def info(
        self, kind: RerankerKind, max_tokens: int, score: str, default_instruction: str | None = None
    ) -> RerankerInfo:
        return RerankerInfo(
            name=self.name,
            revision=self.revision,
            kind=kind,
            max_tokens=max_tokens,
            license=self.license,
            score=score,
            compute_dtype=self.dtype,
            source=str(self.folder.resolve()),
            default_instruction=default_instruction,
        )


@dataclass(frozen=True)
class PairInput:
    """One (query, document) pair as the model reads it."""

    ids: list[int]
    segments: list[int] = field(default_factory=list)  # segment (token type) ids, where the model has them
    truncated: bool = False


@dataclass(frozen=True)
class RerankResult:
    index: int  # the document's position in the input
    relevance_score: float


class Reranker(ABC):
    """Base of every reranker. Subclasses implement encode and forward."""

    def __init__(self, info: RerankerInfo, *, batch_tokens: int = 8192, max_batch_size: int = 64) -> None:
        self.info = info
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.notes: tuple[str, ...] = ()  # lines worth showing about how it loaded (set by the loader)
        self.dtype_reason = ""  # why it computes in info.compute_dtype (set by the loader)

    # -- what a model supplies -------------------------------------------------------------------

    @abstractmethod
    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[PairInput]:
        """The model input of each (query, document) pair, truncated as the model's reference truncates."""

    @abstractmethod
    def forward(self, batch: Sequence[PairInput]) -> FloatArray:
        """Scores (len(batch),) for one batch of pairs."""

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        """Make this model faster for the many requests of a server (called once it is ready; ``busy`` says
        whether requests are running, so the work can wait for them); a line saying what was done, or None.
        By default nothing: the PyTorch rerankers prepack their bfloat16 CPU matmul weights (model/prepack.py)."""
        return None

    # -- what every reranker gets ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def takes_instructions(self) -> bool:
        return self.info.default_instruction is not None

    @property
    def computes(self) -> str:
        dtype = self.info.compute_dtype
        return f"{dtype} ({self.dtype_reason})" if self.dtype_reason else dtype

    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> FloatArray:
        """One score per document, in input order (higher is more relevant)."""
        return self.score_counted(query, documents, instruction)[0]

    def score_counted(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> tuple[FloatArray, int]:
        """The scores and the model input tokens they took (template and special tokens included)."""
        return self.score_pairs(self.encode(query, documents, instruction))

    def score_pairs(self, pairs: Sequence[PairInput]) -> tuple[FloatArray, int]:
        """Scores of encoded pairs, batched longest first under the token budget, in input order."""
        scores = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return scores, 0
        for batch in token_budget_batches([len(p.ids) for p in pairs], self.batch_tokens, self.max_batch_size):
            scores[batch] = self.forward([pairs[i] for i in batch])
        return scores, sum(len(p.ids) for p in pairs)

    def rerank(
        self, query: str, documents: Sequence[str], instruction: str | None = None, top_n: int | None = None
    ) -> list[RerankResult]:
        """The documents' positions and scores, best first (ties in input order), the first ``top_n``."""
        return ranked(self.score(query, documents, instruction), top_n)


def ranked(scores: FloatArray, top_n: int | None = None) -> list[RerankResult]:
    """Scores as results, best first; equal scores keep input order (a stable sort)."""
    order = np.argsort(-scores, kind="stable")
    if top_n is not None:
        order = order[:top_n]
    return [RerankResult(index=int(i), relevance_score=float(scores[i])) for i in order]
