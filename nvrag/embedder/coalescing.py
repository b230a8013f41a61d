"""Dynamic batching: an Embedder whose calls from many threads are merged into the same token-budget batches.

Every ``embed_*`` call (a search's query, an API request, a document batch of an indexing run) becomes a job on
a bounded queue. One worker thread takes every job waiting, tokenises them, and groups the rows of all jobs
that share a prefix (document mode, or one query instruction) into the wrapped model's token-budget batches,
so ten concurrent one-line requests cost one forward pass rather than ten. Each job gets its own rows back,
normalised, in input order.

Batching never changes a result beyond float rounding: every row is computed with the same mask and the same
weights whatever shares its batch (the API tests compare concurrent and lone requests within 1e-6). A full
queue refuses new work at once with OverloadedError (the API answers 429) rather than growing without bound.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nvrag.embedder.base import Embedder, FloatArray, token_budget_batches
from nvrag.errors import OverloadedError

DEFAULT_MAX_QUEUED = 256


@dataclass
class _Job:
    texts: Sequence[str]
    prefix: str
    done: threading.Event = field(default_factory=threading.Event)
    result: FloatArray | None = None
    tokens: int = 0  # model input tokens of the job's texts, as embedded (truncated, special tokens included)
    error: BaseException | None = None


BatchHook = Callable[[int, int], None]  # (rows in a forward pass, jobs those rows came from)


class CoalescingEmbedder(Embedder):
    """Wraps ``inner`` (its identity, tokenizer and forward pass) behind one worker thread; see the module."""

    def __init__(
        self, inner: Embedder, *, max_queued: int = DEFAULT_MAX_QUEUED, on_batch: BatchHook | None = None
    ) -> None:
        super().__init__(inner.info, batch_tokens=inner.batch_tokens, max_batch_size=inner.max_batch_size)
        self.inner = inner
        self.max_queued = max_queued
        self.on_batch = on_batch
        self._jobs: queue.Queue[_Job] = queue.Queue(maxsize=max_queued)
        self._worker = threading.Thread(target=self._work, name=f"nvrag-batcher-{inner.name}", daemon=True)
        self._worker.start()

    # the wrapped model supplies everything but the batching
    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        return self.inner.tokenize(texts, prefix)

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        return self.inner.forward(batch, prefix)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_spans(text)

    @property
    def special_tokens(self) -> int:
        return self.inner.special_tokens

    @property
    def queued(self) -> int:
        """Jobs waiting for the worker now."""
        return self._jobs.qsize()

    def _embed(self, texts: Sequence[str], prefix: str) -> FloatArray:
        return self.embed_counted(texts, prefix)[0]

    def embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        """The vectors of ``prefix + text`` for each text, and the model input tokens they took."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), 0
        job = _Job(list(texts), prefix)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise OverloadedError(
                f"{self.max_queued} embedding requests are already queued for {self.name}; retry shortly"
            ) from None
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result, job.tokens

    def _work(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            while True:  # everything that queued up during the last forward pass joins this round
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            by_prefix: dict[str, list[_Job]] = {}
            for job in jobs:
                by_prefix.setdefault(job.prefix, []).append(job)
            for prefix, group in by_prefix.items():
                try:
                    self._run(prefix, group)
                except BaseException as exc:  # the jobs' callers re-raise it; the worker lives on
                    for job in group:
                        job.error = exc
                for job in group:
                    job.done.set()

    def _run(self, prefix: str, group: list[_Job]) -> None:
        rows: list[list[int]] = []
        owners: list[tuple[int, int]] = []  # (job, row within the job) of each row
        for j, job in enumerate(group):
            ids = self.inner.tokenize(job.texts, prefix)
            job.tokens = sum(len(x) for x in ids)
            rows.extend(ids)
            owners.extend((j, r) for r in range(len(ids)))
        outs = [np.zeros((len(job.texts), self.dimension), dtype=np.float32) for job in group]
        for batch in token_budget_batches([len(r) for r in rows], self.batch_tokens, self.max_batch_size):
            vectors = self.inner.forward([rows[i] for i in batch], prefix)
            for i, vector in zip(batch, vectors, strict=True):
                j, r = owners[i]
                outs[j][r] = vector
            if self.on_batch is not None:
                self.on_batch(len(batch), len({owners[i][0] for i in batch}))
        for job, out in zip(group, outs, strict=True):
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            job.result = (out / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
