"""The scheduler: one per served model, it owns batching for every caller of that model.

Every ``embed_*`` call (a search's query, an API request, the chunks of a documents request) is tokenised in
the caller's thread and becomes a *job*. Worker threads, one per replica of the model (``replica_set``: one on
a CPU, one per device with ``--devices``), each ask the scheduler for the next forward pass and run it. A
forward pass is one token-budget batch, composed at the moment a worker is free:

- it is led by the most urgent job: queries before documents, then the job with the fewest tokens still to
  run, then the oldest; every ``AGING``-th batch is led by the oldest job instead, so a large job keeps moving
  while small ones stream past it;
- the leader's longest pending row sets the batch's width; the batch is filled with pending rows of the
  leader and then of other jobs sharing its prefix (document mode, or one query instruction) whose lengths lie
  between ``MIN_FILL`` of that width and the width itself, up to the token budget (padding stays under a third
  of the real tokens, as in ``token_budget_batches``).

So a large request is cut into slices interleaved with everything else: a one-line search waits at most for
the forward pass in flight, however large the requests ahead of it (the API tests time this against a
maximal request). Batching never changes a result beyond float rounding: every row is computed with the same
mask and weights whatever shares its batch.

Admission: at most ``max_queued`` jobs and ``max_queued_tokens`` tokens wait at once, and a job is admitted
only if the work ranked ahead of it and its own would finish within ``max_queue_seconds`` at the model's
measured throughput, so small requests are still taken while bulk work waits. A job alone is always admitted
(a maximal request still runs on an idle server). Past any bound a call is refused at once with
OverloadedError, whose ``retry_after`` estimates when the queue will have drained.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nvrag.embedder.base import Embedder, FloatArray, normalise
from nvrag.errors import OverloadedError

DEFAULT_MAX_QUEUED = 256
DEFAULT_MAX_QUEUED_TOKENS = 1 << 20  # about 4,000 one-page documents, or 100,000 one-line queries
DEFAULT_MAX_QUEUE_SECONDS = 10.0  # the longest wait the queue may promise, at the model's measured throughput
AGING = 4
MIN_FILL = 0.75

BatchHook = Callable[[int, int], None]  # (rows in a forward pass, jobs those rows came from)
# (seconds a job waited for its first forward pass, seconds it ran, its tokens), for each job that succeeded
JobHook = Callable[[float, float, int], None]


@dataclass(eq=False)
class _Job:
    prefix: str
    ids: list[list[int]]
    urgent: bool  # a query: ahead of documents
    seq: int
    out: FloatArray
    pending: list[int] = field(init=False)  # rows not yet handed to a worker, longest first
    pending_tokens: int = field(init=False)
    tokens: int = field(init=False)
    running: int = 0  # batches of this job in a forward pass now
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.pending = sorted(range(len(self.ids)), key=lambda i: -len(self.ids[i]))
        self.tokens = self.pending_tokens = sum(len(x) for x in self.ids)

    @property
    def dispatched(self) -> bool:
        return not self.pending

    def rank(self) -> tuple[bool, int, int]:
        return (not self.urgent, self.pending_tokens, self.seq)

    def take(self, low: float, high: int, room: int) -> list[int]:
        """Up to ``room`` pending rows whose lengths lie in [low, high], longest first, removed from pending."""
        taken: list[int] = []
        kept: list[int] = []
        for i in self.pending:
            n = len(self.ids[i])
            if len(taken) < room and low <= n <= high:
                taken.append(i)
                self.pending_tokens -= n
            else:
                kept.append(i)
        self.pending = kept
        return taken


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
    ) -> None:
        super().__init__(inner.info, batch_tokens=inner.batch_tokens, max_batch_size=inner.max_batch_size)
        self.inner = inner
        self.notes = inner.notes
        self.max_queued, self.max_queued_tokens = max_queued, max_queued_tokens
        self.max_queue_seconds = max_queue_seconds
        self.on_batch, self.on_job = on_batch, on_job
        self._cond = threading.Condition()
        self._pending: list[_Job] = []  # jobs with rows not yet handed to a worker
        self._queued_tokens = 0
        self._seq = itertools.count()
        self._turn = 0
        self._rate = 0.0  # tokens a second over recent forward passes (for Retry-After)
        for n, replica in enumerate(inner.replica_set()):
            name = f"nvrag-scheduler-{inner.name}-{n}"
            threading.Thread(target=self._work, args=(replica,), name=name, daemon=True).start()

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
        """Jobs with rows still waiting for a forward pass."""
        with self._cond:
            return len(self._pending)

    @property
    def queued_tokens(self) -> int:
        with self._cond:
            return self._queued_tokens

    def _embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), 0
        ids = self.inner.tokenize(texts, prefix)  # here, so a large request's tokenising holds no one else up
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        urgent = prefix != self.info.document_template
        job = _Job(prefix, ids, urgent, next(self._seq), out)
        with self._cond:
            self._admit(job)
            self._pending.append(job)
            self._queued_tokens += job.tokens
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.out, job.tokens

    def _admit(self, job: _Job) -> None:
        if len(self._pending) >= self.max_queued:
            raise OverloadedError(
                f"{self.max_queued} embedding requests are already queued for {self.name}; retry shortly",
                self._retry_after(),
            )
        if self._pending and self._queued_tokens + job.tokens > self.max_queued_tokens:
            raise OverloadedError(
                f"{self._queued_tokens} tokens are already queued for {self.name} and this request adds "
                f"{job.tokens} (the limit is {self.max_queued_tokens}); retry shortly",
                self._retry_after(),
            )
        rate = self._rate
        if self._pending and rate > 0 and self.max_queue_seconds is not None:
            # the work that runs before this job ends: the jobs ranked ahead of it and its own, plus the share
            # of passes the oldest job takes (one in AGING); a one-line query waits for little however much
            # bulk work is queued, so it is not refused because of it
            ahead = sum(j.pending_tokens for j in self._pending if j.rank() < job.rank()) + job.tokens
            wait = ahead * AGING / (AGING - 1) / rate
            if wait > self.max_queue_seconds:
                raise OverloadedError(
                    f"{self.name} has about {self._queued_tokens / rate:.1f} s of work queued and this request "
                    f"would take {wait:.1f} s to finish (the limit is {self.max_queue_seconds:g} s); retry shortly",
                    self._retry_after(),
                )

    def _retry_after(self) -> int:
        if self._rate <= 0:
            return 1
        return max(1, min(60, math.ceil(self._queued_tokens / self._rate)))

    def _next_batch(self) -> tuple[str, list[tuple[_Job, int]]]:
        """The rows of the next forward pass (called with the lock held, at least one job pending): the leader's
        longest pending row sets the width; rows of like length (within MIN_FILL of it, never wider) from jobs
        of the same prefix fill the token budget, the leader's first, then in rank order."""
        self._turn += 1
        ranked = sorted(self._pending, key=_Job.rank)
        if self._turn % AGING == 0:
            oldest = min(ranked, key=lambda j: j.seq)
            ranked.remove(oldest)
            ranked.insert(0, oldest)
        leader = ranked[0]
        width = len(leader.ids[leader.pending[0]])
        room = max(1, min(self.max_batch_size, self.batch_tokens // max(width, 1)))
        rows: list[tuple[_Job, int]] = []
        for job in ranked:
            if len(rows) >= room:
                break
            if job.prefix == leader.prefix:
                before = job.pending_tokens
                rows.extend((job, i) for i in job.take(MIN_FILL * width, width, room - len(rows)))
                self._queued_tokens -= before - job.pending_tokens
        self._pending = [j for j in self._pending if not j.dispatched]
        return leader.prefix, rows

    def _work(self, replica: Embedder) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                prefix, rows = self._next_batch()
                jobs = list(dict.fromkeys(job for job, _ in rows))
                began = time.perf_counter()
                for job in jobs:
                    job.running += 1
                    job.started = job.started or began
            error: BaseException | None = None
            try:
                vectors = replica.forward([job.ids[i] for job, i in rows], prefix)
                for (job, i), vector in zip(rows, vectors, strict=True):
                    job.out[i] = vector
            except BaseException as exc:  # the jobs' callers re-raise it; the worker lives on
                error = exc
            ended = time.perf_counter()
            finished = self._settle(jobs, error, sum(len(job.ids[i]) for job, i in rows), ended - began)
            for job in finished:
                if job.error is None:
                    job.out = normalise(job.out)
                job.done.set()
                if self.on_job is not None and job.started is not None and job.error is None:
                    self.on_job(job.started - job.submitted, ended - job.started, job.tokens)
            if self.on_batch is not None:
                self.on_batch(len(rows), len(jobs))

    def _settle(self, jobs: list[_Job], error: BaseException | None, tokens: int, seconds: float) -> list[_Job]:
        """Book a finished forward pass; the jobs it completed (or failed)."""
        finished = []
        with self._cond:
            if error is None and seconds > 0:
                self._rate = 0.8 * self._rate + 0.2 * (tokens / seconds) if self._rate else tokens / seconds
            for job in jobs:
                job.running -= 1
                if error is not None and job.error is None:
                    job.error = error
                    if not job.dispatched:  # its other rows will not run
                        self._pending.remove(job)
                        self._queued_tokens -= job.pending_tokens
                        job.pending, job.pending_tokens = [], 0
                if job.dispatched and job.running == 0:
                    finished.append(job)
        return finished
