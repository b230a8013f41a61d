"""The scheduler: one per served model, it owns batching for every caller of that model.

Every ``embed_*`` call (a search's query, an API request, the chunks of a documents request) is tokenised in
the caller's thread and becomes a job of the model's WorkQueue (``work_queue.py``: how forward passes are
composed and how work is admitted): one worker per replica of the model (``replica_set``: one on a CPU, one
per device with ``--devices``); queries are urgent, rows share a pass only with rows of the same prompt.

So a large request is cut into slices interleaved with everything else: a one-line search waits at most for
the forward pass in flight, however large the requests ahead of it (the API tests time this against a
maximal request). Batching never changes a result beyond float rounding: every row is computed with the same
mask and weights whatever shares its batch. Past the queue's bounds a call is refused at once with
OverloadedError (429 over HTTP).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from nvrag.embedder.base import Embedder, FloatArray, normalise
from nvrag.embedder.work_queue import (
    DEFAULT_MAX_QUEUE_SECONDS,
    DEFAULT_MAX_QUEUED,
    DEFAULT_MAX_QUEUED_TOKENS,
    BatchHook,
    JobHook,
    Output,
    WorkQueue,
)
from nvrag.heap import trim_heap

__all__ = [
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_QUEUED_TOKENS",
    "DEFAULT_MAX_QUEUE_SECONDS",
    "BatchHook",
    "JobHook",
    "Scheduler",
]


class Scheduler(Embedder):
    """Wraps ``inner`` (its identity, tokenizer and forward passes, one worker per replica); see the module."""

    def __init__(
        self,
        inner: Embedder,
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
        self.notes, self.dtype_reason, self.weight_bytes = inner.notes, inner.dtype_reason, inner.weight_bytes

        def forward_of(replica: Embedder) -> Callable[[Sequence[object], Hashable], Output]:
            return lambda rows, key: replica.forward(rows, str(key))  # type: ignore[arg-type]

        self.queue = WorkQueue(
            inner.name,
            [forward_of(r) for r in inner.replica_set()],
            batch_tokens=inner.batch_tokens,
            max_batch_size=inner.max_batch_size,
            what="embedding requests",
            max_queued=max_queued,
            max_queued_tokens=max_queued_tokens,
            max_queue_seconds=max_queue_seconds,
            on_batch=on_batch,
            on_job=on_job,
            on_done=normalise,
            on_idle=trim_heap,  # after a burst, the large passes' freed blocks go back (nvrag/heap.py)
            before_pass=before_pass,
        )

    # the wrapped model supplies everything but the batching
    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        return self.inner.tokenize(texts, prefix)

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        queue = self.queue
        return self.inner.prepare_for_serving(busy or (lambda: queue.busy))  # requests first

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        return self.inner.forward(batch, prefix)

    def close(self) -> None:
        self.queue.close()
        self.inner.close()

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_spans(text)

    @property
    def special_tokens(self) -> int:
        return self.inner.special_tokens

    @property
    def queued(self) -> int:
        """Jobs with rows still waiting for a forward pass."""
        return self.queue.queued

    @property
    def queued_tokens(self) -> int:
        return self.queue.queued_tokens

    def _embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), 0
        ids = self.inner.tokenize(texts, prefix)  # here, so a large request's tokenising holds no one else up
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        urgent = prefix != self.info.document_template
        vectors, tokens = self.queue.submit(prefix, ids, [len(x) for x in ids], urgent, out)
        return vectors, tokens
