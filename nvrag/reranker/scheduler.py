"""The rerankers' scheduler: one per served reranker, it owns batching for every caller (``/v1/rerank``,
reranked searches from the API, MCP and the page).

Each call is encoded in the caller's thread and becomes a job of a WorkQueue (``embedder/work_queue.py``): the
pairs of every waiting request share token-budget forward passes of like-length rows, a large request is cut
into slices interleaved with small ones, and the queue's bounds refuse work at once (OverloadedError, 429)
rather than let it wait past them. A pair's score does not depend on what shares its pass (masks per row).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from nvrag.embedder.base import FloatArray
from nvrag.embedder.scheduler import DEFAULT_MAX_QUEUE_SECONDS, DEFAULT_MAX_QUEUED, DEFAULT_MAX_QUEUED_TOKENS
from nvrag.embedder.work_queue import BatchHook, JobHook, Output, WorkQueue
from nvrag.heap import trim_heap
from nvrag.reranker.base import PairInput, Reranker


class RerankScheduler(Reranker):
    """Wraps ``inner`` (its identity, encoding and forward passes); see the module."""

    def __init__(
        self,
        inner: Reranker,
        *,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_queued_tokens: int = DEFAULT_MAX_QUEUED_TOKENS,
        max_queue_seconds: float | None = DEFAULT_MAX_QUEUE_SECONDS,
        on_batch: BatchHook | None = None,
        on_job: JobHook | None = None,
        before_pass: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(inner.info, batch_tokens=inner.batch_tokens, max_batch_size=inner.max_batch_size)
        self.inner = inner
        self.notes, self.dtype_reason = inner.notes, inner.dtype_reason

        def forward(rows: Sequence[object], key: Hashable) -> Output:
            return inner.forward(rows)  # type: ignore[arg-type]  # the rows submitted below: PairInputs

        self.queue = WorkQueue(
            inner.name,
            [forward],
            batch_tokens=inner.batch_tokens,
            max_batch_size=inner.max_batch_size,
            what="rerank requests",
            max_queued=max_queued,
            max_queued_tokens=max_queued_tokens,
            max_queue_seconds=max_queue_seconds,
            on_batch=on_batch,
            on_job=on_job,
            on_idle=trim_heap,  # after a burst, the large passes' freed blocks go back (nvrag/heap.py)
            before_pass=before_pass,
        )

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[PairInput]:
        return self.inner.encode(query, documents, instruction)

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        queue = self.queue
        return self.inner.prepare_for_serving(busy or (lambda: queue.busy))  # requests first

    def forward(self, batch: Sequence[PairInput]) -> FloatArray:
        return self.inner.forward(batch)

    @property
    def queued(self) -> int:
        return self.queue.queued

    @property
    def queued_tokens(self) -> int:
        return self.queue.queued_tokens

    def score_pairs(self, pairs: Sequence[PairInput]) -> tuple[FloatArray, int]:
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out, 0
        # a rerank is a query's work: urgent, like a search's query, ahead of bulk document embedding
        scores, tokens = self.queue.submit("", list(pairs), [len(p.ids) for p in pairs], True, out)
        return scores, tokens
