"""The batching core of a served model's scheduler: jobs of rows in, token-budget forward passes out.

A *job* is one caller's rows (token id lists of texts, or of query-document pairs) with a key (rows of one
forward pass share it: a prompt), an urgency and an output array. Worker threads, one per replica of the
model, each ask for the next forward pass and run it with their own ``forward(rows, key)``:

- it is led by the most urgent job: urgent (queries) before the rest, then the job with the fewest tokens
  still to run, then the oldest; every ``AGING``-th pass is led by the oldest job instead, so a large job
  keeps moving while small ones stream past it;
- the leader's longest pending row sets the pass's width, widened to the longest pending row of its key at most
  ``PAD_SLACK`` tokens longer; the pass is filled with pending rows of the leader and then of other jobs with
  its key whose lengths lie within ``MIN_FILL`` of that width or ``PAD_SLACK`` tokens under it, up to the token
  budget (padding stays under a third of the real tokens, or under PAD_SLACK tokens a row: short rows, such as
  queries of 4 to 20 tokens, share passes instead of the longest waiting for passes of their own).

Admission: at most ``max_queued`` jobs and ``max_queued_tokens`` tokens wait at once, and a job is admitted
only if the work ranked ahead of it and its own would finish within ``max_queue_seconds`` at the measured
throughput; a job alone is always admitted. Past any bound ``submit`` raises OverloadedError at once, its
``retry_after`` estimating when the queue will have drained. The embedders' Scheduler and the rerankers'
RerankScheduler are this queue with their model's rows and outputs.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy.typing as npt

from nvrag.errors import OverloadedError

DEFAULT_MAX_QUEUED = 256
DEFAULT_MAX_QUEUED_TOKENS = 1 << 20  # about 4,000 one-page documents, or 100,000 one-line queries
DEFAULT_MAX_QUEUE_SECONDS = 10.0  # the longest wait the queue may promise, at the model's measured throughput
AGING = 4
IDLE_SECONDS = 5.0  # a worker idle this long after a pass calls on_idle (servers: hand freed heap pages back)
CLOSED_IDLE_SECONDS = 2.0  # and this long after the last worker of a closed queue ended (an unloaded model freed)
MIN_FILL = 0.75
PAD_SLACK = 16

Row = TypeVar("Row")
Output = npt.NDArray[Any]
Forward = Callable[[Sequence[Any], Hashable], Output]  # a replica's forward pass: (rows, key) → one output each
BatchHook = Callable[[int, int], None]  # (rows in a forward pass, jobs those rows came from)
# (seconds a job waited for its first forward pass, seconds it ran, its tokens), for each job that succeeded
JobHook = Callable[[float, float, int], None]


@dataclass(eq=False)
class _Job(Generic[Row]):
    key: Hashable
    rows: Sequence[Row]
    lengths: list[int]
    urgent: bool
    seq: int
    out: Output
    pending: list[int] = field(init=False)  # rows not yet handed to a worker, longest first
    pending_tokens: int = field(init=False)
    tokens: int = field(init=False)
    running: int = 0  # batches of this job in a forward pass now
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.pending = sorted(range(len(self.rows)), key=lambda i: -self.lengths[i])
        self.tokens = self.pending_tokens = sum(self.lengths)

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
            n = self.lengths[i]
            if len(taken) < room and low <= n <= high:
                taken.append(i)
                self.pending_tokens -= n
            else:
                kept.append(i)
        self.pending = kept
        return taken


class WorkQueue:
    """See the module. ``name``: the model, as refusals name it; ``forwards``: one forward function per replica,
    each driven by its own thread; ``what``: how refusals name the work ("embedding requests"); ``before_pass``:
    called in the worker's thread before each forward pass (servers: how many compute threads it uses)."""

    def __init__(
        self,
        name: str,
        forwards: Sequence[Forward],
        *,
        batch_tokens: int,
        max_batch_size: int,
        what: str = "requests",
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_queued_tokens: int = DEFAULT_MAX_QUEUED_TOKENS,
        max_queue_seconds: float | None = DEFAULT_MAX_QUEUE_SECONDS,
        on_batch: BatchHook | None = None,
        on_job: JobHook | None = None,
        on_done: Callable[[Output], Output] | None = None,
        on_idle: Callable[[], object] | None = None,
        idle_seconds: float = IDLE_SECONDS,
        before_pass: Callable[[], object] | None = None,
    ) -> None:
        self.name, self.what = name, what
        self.on_idle, self.idle_seconds = on_idle, idle_seconds
        self.before_pass = before_pass
        self.batch_tokens, self.max_batch_size = batch_tokens, max_batch_size
        self.max_queued, self.max_queued_tokens = max_queued, max_queued_tokens
        self.max_queue_seconds = max_queue_seconds
        self.on_batch, self.on_job, self.on_done = on_batch, on_job, on_done
        self._cond = threading.Condition()
        self._pending: list[_Job[Any]] = []  # jobs with rows not yet handed to a worker
        self._queued_tokens = 0
        self._seq = itertools.count()
        self._turn = 0
        self._rate = 0.0  # tokens a second over recent forward passes (for Retry-After)
        self._passes = 0  # forward passes running now
        self._closed = False  # close(): the workers stop once the work queued is done
        self._running_workers = len(forwards)
        self.workers = [  # one per replica; after close(), they end once the work queued is done
            threading.Thread(target=self._work, args=(forward,), name=f"nvrag-queue-{name}-{n}", daemon=True)
            for n, forward in enumerate(forwards)
        ]
        for thread in self.workers:
            thread.start()

    @property
    def queued(self) -> int:
        """Jobs with rows still waiting for a forward pass."""
        with self._cond:
            return len(self._pending)

    @property
    def queued_tokens(self) -> int:
        with self._cond:
            return self._queued_tokens

    @property
    def busy(self) -> bool:
        """A forward pass is running, or rows wait for one."""
        with self._cond:
            return bool(self._pending) or self._passes > 0

    def close(self) -> None:
        """No new work: the jobs queued still run, then the workers end (and drop their replicas' forward
        functions, so the model can be freed) and, CLOSED_IDLE_SECONDS later, on_idle runs once (the unloaded
        model's freed heap goes back). A later submit is refused (OverloadedError: retry)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def submit(
        self, key: Hashable, rows: Sequence[Row], lengths: list[int], urgent: bool, out: Output
    ) -> tuple[Output, int]:
        """Run ``rows`` (their lengths in tokens) into ``out`` (one entry per row), waiting for the result;
        the output (through ``on_done``) and the tokens it took."""
        job: _Job[Row] = _Job(key, rows, lengths, urgent, next(self._seq), out)
        with self._cond:
            if self._closed:
                raise OverloadedError(f"{self.name} was unloaded to make room for another model; retry", 1)
            self._admit(job)
            self._pending.append(job)
            self._queued_tokens += job.tokens
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.out, job.tokens

    def _admit(self, job: _Job[Any]) -> None:
        if len(self._pending) >= self.max_queued:
            raise OverloadedError(
                f"{self.max_queued} {self.what} are already queued for {self.name}; retry shortly",
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

    def _next_batch(self) -> tuple[Hashable, list[tuple[_Job[Any], int]]]:
        """The rows of the next forward pass (called with the lock held, at least one job pending): the leader's
        longest pending row, widened by at most PAD_SLACK to a longer pending row of its key, sets the width; rows
        of like length (within MIN_FILL or PAD_SLACK of it, never wider) from jobs of the same key fill the token
        budget, the leader's first, then in rank order."""
        self._turn += 1
        ranked = sorted(self._pending, key=_Job.rank)
        if self._turn % AGING == 0:
            oldest = min(ranked, key=lambda j: j.seq)
            ranked.remove(oldest)
            ranked.insert(0, oldest)
        leader = ranked[0]
        width = leader.lengths[leader.pending[0]]
        near = (n for job in ranked if job.key == leader.key for n in map(job.lengths.__getitem__, job.pending))
        width = max((n for n in near if n <= width + PAD_SLACK), default=width)
        low = min(MIN_FILL * width, width - PAD_SLACK)
        room = max(1, min(self.max_batch_size, self.batch_tokens // max(width, 1)))
        rows: list[tuple[_Job[Any], int]] = []
        for job in ranked:
            if len(rows) >= room:
                break
            if job.key == leader.key:
                before = job.pending_tokens
                rows.extend((job, i) for i in job.take(low, width, room - len(rows)))
                self._queued_tokens -= before - job.pending_tokens
        self._pending = [j for j in self._pending if not j.dispatched]
        return leader.key, rows

    def _work(self, forward: Forward) -> None:
        worked = False  # a pass ran since this worker was last idle for idle_seconds
        while True:
            with self._cond:
                idle = False
                while not self._pending and not idle:
                    if self._closed:
                        self._running_workers -= 1
                        if self._running_workers == 0 and self.on_idle is not None:
                            # once the last pass's callers and whoever unloaded the model have let go of it
                            later = threading.Timer(CLOSED_IDLE_SECONDS, self.on_idle)
                            later.daemon = True
                            later.start()
                        return
                    timeout = self.idle_seconds if worked and self.on_idle is not None else None
                    idle = not self._cond.wait(timeout) and not self._pending  # wait() is False on a timeout
                if not idle:
                    key, rows = self._next_batch()
                    if self._pending:
                        self._cond.notify()  # rows remain: wake another worker (one job can keep every replica busy)
                    jobs = list(dict.fromkeys(job for job, _ in rows))
                    began = time.perf_counter()
                    for job in jobs:
                        job.running += 1
                        job.started = job.started or began
                    self._passes += 1
            if idle:  # outside the lock: submissions go on meanwhile
                worked = False
                assert self.on_idle is not None
                self.on_idle()
                continue
            worked = True
            error: BaseException | None = None
            try:
                if self.before_pass is not None:
                    self.before_pass()
                outputs = forward([job.rows[i] for job, i in rows], key)
                for (job, i), output in zip(rows, outputs, strict=True):
                    job.out[i] = output
            except BaseException as exc:  # the jobs' callers re-raise it; the worker lives on
                error = exc
            ended = time.perf_counter()
            finished = self._settle(jobs, error, sum(job.lengths[i] for job, i in rows), ended - began)
            for job in finished:
                if job.error is None and self.on_done is not None:
                    job.out = self.on_done(job.out)
                job.done.set()
                if self.on_job is not None and job.started is not None and job.error is None:
                    self.on_job(job.started - job.submitted, ended - job.started, job.tokens)
            if self.on_batch is not None:
                self.on_batch(len(rows), len(jobs))

    def _settle(
        self, jobs: list[_Job[Any]], error: BaseException | None, tokens: int, seconds: float
    ) -> list[_Job[Any]]:
        """Book a finished forward pass; the jobs it completed (or failed)."""
        finished = []
        with self._cond:
            self._passes -= 1
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
