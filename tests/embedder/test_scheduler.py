"""The scheduler: concurrent calls merged into shared forward passes, each caller getting exactly its own rows;
large calls cut into token-budget slices that small ones overtake (queries first, then the fewest tokens), with
the oldest job leading every AGING-th pass; bounded queues refusing at once; a failing pass failing only its
callers; one worker per replica."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.embedder.base import FloatArray
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.embedder.replicas import ReplicatedEmbedder
from nvrag.embedder.scheduler import Scheduler
from nvrag.embedder.work_queue import AGING, WorkQueue
from nvrag.errors import OverloadedError
from nvrag.heap import trim_heap


class Gate(WordLengthEmbedder):
    """The fake model (vectors by hand: word-length histograms), whose forward passes are recorded as the sets
    of texts' first words they held, and which waits at a gate the test opens (so that work queues up)."""

    def __init__(self, batch_tokens: int = 10_000) -> None:
        super().__init__(batch_tokens=batch_tokens)
        self.entered, self.gate = threading.Event(), threading.Event()
        self.fail_on: str | None = None
        self.passes: list[tuple[str, int]] = []  # (prefix, rows) of each forward pass, in order
        self.firsts: list[int] = []  # the first token of each pass's first row (its word's length)
        self.threads: set[str] = set()

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        self.entered.set()
        self.gate.wait(timeout=60)
        self.passes.append((prefix, len(batch)))
        self.firsts.append(batch[0][0])
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and prefix == self.fail_on:
            raise RuntimeError("the device fell over")
        return super().forward(batch, prefix)


def texts(n: int) -> list[str]:
    return [" ".join("w" * (1 + (i * j) % 7) for j in range(1 + i % 5)) for i in range(n)]


def wait_until(condition: object) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed check
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_waiting_calls_share_forward_passes_and_each_gets_its_own_rows() -> None:
    inner = Gate()
    seen: list[tuple[int, int]] = []
    waits: list[tuple[float, float]] = []
    batcher = Scheduler(
        inner, on_batch=lambda rows, jobs: seen.append((rows, jobs)), on_job=lambda w, r, t: waits.append((w, r))
    )
    alone = WordLengthEmbedder()
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(batcher.embed_documents, ["the first call holds the worker"])
        assert inner.entered.wait(timeout=60)
        calls = [texts(i + 1) for i in range(10)]
        futures = [pool.submit(batcher.embed_documents, c) for c in calls]
        queries = pool.submit(batcher.embed_queries, ["a query"], instruction="find")
        wait_until(lambda: batcher.queued == 11)
        assert batcher.queued_tokens == sum(len(x) for c in calls for x in inner.tokenize(c, "")) + 3  # "find: a query"
        inner.gate.set()
        np.testing.assert_array_equal(first.result(), alone.embed_documents(["the first call holds the worker"]))
        for c, f in zip(calls, futures, strict=True):
            np.testing.assert_array_equal(f.result(), alone.embed_documents(c))
        np.testing.assert_array_equal(queries.result(), alone.embed_queries(["a query"], instruction="find"))
    # the first call alone; then the query (another prefix, and urgent) before any document; then the ten
    # document calls' 55 rows in fewer passes than calls (rows of like lengths together)
    first_pass, query_pass, *middle = seen
    assert first_pass == (1, 1) and query_pass == (1, 1) and inner.passes[1][0] == "find: "
    assert sum(rows for rows, _ in middle) == 55 and len(middle) < 10 and max(jobs for _, jobs in middle) >= 5
    assert len(waits) == 12 and all(w >= 0 and r >= 0 for w, r in waits)
    assert batcher.queued == 0 and batcher.queued_tokens == 0


def test_a_large_call_is_sliced_and_small_calls_overtake_it() -> None:
    # budget 12 tokens: the large call's 60 rows of 4 one-letter words take 20 passes of 3 rows
    inner = Gate(batch_tokens=12)
    batcher = Scheduler(inner)
    big = ["a b c d"] * 60
    with ThreadPoolExecutor(4) as pool:
        holder = pool.submit(batcher.embed_documents, ["hold"])
        assert inner.entered.wait(timeout=60)
        large = pool.submit(batcher.embed_documents, big)
        wait_until(lambda: batcher.queued == 1)
        small = pool.submit(batcher.embed_documents, ["one"])
        query = pool.submit(batcher.embed_queries, ["two"], instruction="q")
        wait_until(lambda: batcher.queued == 3)
        inner.gate.set()
        holder.result()
        np.testing.assert_array_equal(large.result(), WordLengthEmbedder().embed_documents(big))
        small.result()
        query.result()
    prefixes = [p for p, _ in inner.passes]
    rows = [n for _, n in inner.passes]
    # after the holder: the query (urgent), the small call (fewest tokens), its 1-token row widened to share a
    # pass with two of the large call's (4 tokens: within PAD_SLACK), then the large call in slices of 3
    assert prefixes[1] == "q: " and rows[1] == 1
    assert rows[2] == 3 and inner.firsts[2] == 3  # the small call's row ("one") leads its pass
    assert rows[3:] == [3] * 19 + [1]


def test_the_oldest_job_leads_every_aging_th_pass_so_a_large_job_keeps_moving() -> None:
    assert AGING == 4  # the expected order below is written out for it
    inner = Gate(batch_tokens=4)  # one row of 4 tokens a pass
    batcher = Scheduler(inner)
    with ThreadPoolExecutor(16) as pool:
        holder = pool.submit(batcher.embed_documents, ["hold"])  # pass (turn) 1
        assert inner.entered.wait(timeout=60)
        large = pool.submit(batcher.embed_documents, ["llll llll llll llll"] * 5)  # rows of words of length 4
        wait_until(lambda: batcher.queued == 1)
        smalls = [pool.submit(batcher.embed_documents, ["s s s s"]) for _ in range(8)]  # words of length 1
        wait_until(lambda: batcher.queued == 9)
        inner.gate.set()
        for f in [holder, large, *smalls]:
            f.result()
    # small jobs lead (fewest tokens), but the oldest job (the large one) leads every 4th turn
    served = "".join("L" if first == 4 else "s" for first in inner.firsts[1:])
    assert served == "ssLsssLsssLLL"


def test_full_queues_refuse_at_once_and_a_failed_pass_fails_only_its_callers() -> None:
    inner = Gate()
    batcher = Scheduler(inner, max_queued=2, max_queued_tokens=5)
    with ThreadPoolExecutor(4) as pool:
        held = pool.submit(batcher.embed_documents, ["held"])
        assert inner.entered.wait(timeout=60)
        inner.fail_on = "find: "
        queued = [
            pool.submit(batcher.embed_queries, ["q"], instruction="find"),
            pool.submit(batcher.embed_documents, ["d"]),
        ]
        wait_until(lambda: batcher.queued == 2)
        with pytest.raises(OverloadedError, match=r"^2 embedding requests are already queued for nvrag/fake-wordlen"):
            batcher.embed_documents(["one too many"])
        inner.gate.set()
        assert held.result().shape == (1, 8)
        with pytest.raises(RuntimeError, match="the device fell over"):
            queued[0].result()
        np.testing.assert_array_equal(queued[1].result(), WordLengthEmbedder().embed_documents(["d"]))
    inner.fail_on = None
    inner.gate.clear()
    inner.entered.clear()
    with ThreadPoolExecutor(3) as pool:
        held = pool.submit(batcher.embed_documents, ["held"])
        assert inner.entered.wait(timeout=60)
        first = pool.submit(batcher.embed_documents, ["a b c"])  # 3 tokens queued
        wait_until(lambda: batcher.queued == 1)
        with pytest.raises(OverloadedError, match=r"^3 tokens are already queued .* adds 3 \(the limit is 5\)") as e:
            batcher.embed_documents(["d e f"])
        assert e.value.retry_after >= 1
        inner.gate.set()
        first.result()
        held.result()
    # alone, a call over the token bound still runs: an idle server takes a maximal request
    assert batcher.embed_documents(["a b c d e f g h"]).shape == (1, 8)
    assert batcher.embed_documents([]).shape == (0, 8)


class Meeting(Gate):
    """A replica whose first pass waits (a guard of 60 s) until the other is in one too: both devices compute
    at once, whatever the threads' timing."""

    def __init__(self, meet: threading.Barrier) -> None:
        super().__init__(batch_tokens=2)
        self.meet = meet
        self.gate.set()

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        if not self.passes:
            self.meet.wait(timeout=60)
        return super().forward(batch, prefix)


def test_each_replica_gets_its_own_worker() -> None:
    meet = threading.Barrier(2)
    replicas = [Meeting(meet), Meeting(meet)]
    batcher = Scheduler(ReplicatedEmbedder(replicas))
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(batcher.embed_documents, [["a b"] * 4 for _ in range(8)]))
    for g in got:
        np.testing.assert_array_equal(g, WordLengthEmbedder().embed_documents(["a b"] * 4))
    assert all(r.passes for r in replicas)  # both devices computed
    assert len(replicas[0].threads | replicas[1].threads) == 2


def test_minilm_through_the_scheduler_equals_minilm_alone(minilm: MiniLMEmbedder) -> None:
    batcher = Scheduler(minilm)
    assert batcher.notes == minilm.notes
    calls = [texts(n) for n in (1, 3, 8, 2, 13, 1, 5)] + [["a much longer text about many things " * 30]]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(batcher.embed_documents, calls))
    for c, g in zip(calls, got, strict=True):
        np.testing.assert_allclose(g, minilm.embed_documents(c), atol=1e-6)
    vectors, tokens = batcher.embed_counted(["hello world"], "")
    assert tokens == 4 and vectors.shape == (1, 384)  # [CLS] hello world [SEP]
    assert minilm.embed_counted(["hello world"], "")[1] == 4


def test_short_rows_of_different_lengths_share_a_pass_instead_of_the_longest_waiting() -> None:
    """Queries of 2 to 17 tokens: padding them to 17 costs little, so they run in one pass; rows far longer than
    PAD_SLACK past the leader (or, long ones, outside MIN_FILL of the width) still wait for passes of their own."""
    inner = Gate()
    seen: list[tuple[int, int]] = []
    batcher = Scheduler(inner, on_batch=lambda rows, jobs: seen.append((rows, jobs)))
    lengths = (2, 9, 17, 40)  # words: tokens of the fake model (with its one-word prompt "q: ")
    with ThreadPoolExecutor(8) as pool:
        holder = pool.submit(batcher.embed_queries, ["hold"], instruction="q")
        assert inner.entered.wait(timeout=60)
        calls = [pool.submit(batcher.embed_queries, [" ".join(["w"] * (n - 1))], instruction="q") for n in lengths]
        wait_until(lambda: batcher.queued == 4)
        inner.gate.set()
        holder.result()
        for n, call in zip(lengths, calls, strict=True):
            want = WordLengthEmbedder().embed_queries([" ".join(["w"] * (n - 1))], instruction="q")
            np.testing.assert_array_equal(call.result(), want)
    assert seen[1:] == [(3, 3), (1, 1)]  # 2, 9 and 17 tokens together; 40 (23 past 17) alone


def test_a_worker_idle_after_work_calls_on_idle_once_and_still_takes_work_meanwhile() -> None:
    calls: list[float] = []
    release = threading.Event()

    def idle() -> None:  # a slow hook: work submitted while it runs waits for it, then runs
        calls.append(time.monotonic())
        release.wait(timeout=60)

    def forward(rows: Sequence[object], key: object) -> np.ndarray:
        return np.array([len(r) for r in rows], dtype=np.float32)  # type: ignore[arg-type]

    queue = WorkQueue("m", [forward], batch_tokens=100, max_batch_size=8, on_idle=idle, idle_seconds=0.05)
    try:
        time.sleep(0.3)
        assert calls == []  # never worked: nothing to give back
        out, tokens = queue.submit("k", [[1, 2], [3]], [2, 1], False, np.zeros(2, dtype=np.float32))
        assert out.tolist() == [2.0, 1.0] and tokens == 3
        wait_until(lambda: len(calls) == 1)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(queue.submit, "k", [[1, 2, 3]], [3], True, np.zeros(1, dtype=np.float32))
            time.sleep(0.1)
            release.set()
            assert pending.result(timeout=60)[0].tolist() == [3.0]
        wait_until(lambda: len(calls) == 2)  # idle again after that pass, once
        time.sleep(0.3)
        assert len(calls) == 2
    finally:
        release.set()
        queue.close()
    served = Scheduler(Gate())
    served.close()
    assert served.queue.on_idle is trim_heap  # servers hand the large passes' blocks back when idle


def test_a_closed_queue_calls_on_idle_once_its_last_worker_ended() -> None:
    calls: list[float] = []

    def forward(rows: Sequence[object], key: object) -> np.ndarray:
        return np.zeros(len(rows), dtype=np.float32)

    queue = WorkQueue("m", [forward, forward], batch_tokens=100, max_batch_size=8, on_idle=lambda: calls.append(1))
    queue.submit("k", [[1]], [1], False, np.zeros(1, dtype=np.float32))
    queue.close()  # an unloaded model: its freed memory goes back once the workers have let go of it
    for worker in queue.workers:
        worker.join(timeout=60)
    wait_until(lambda: len(calls) == 1)
    time.sleep(0.3)
    assert calls == [1]  # once, not once per worker


def test_before_pass_runs_in_the_worker_thread_before_every_pass() -> None:
    seen: list[tuple[str, int]] = []

    def before() -> None:
        seen.append(("before", threading.get_ident()))

    def forward(rows: Sequence[object], key: object) -> np.ndarray:
        seen.append(("pass", threading.get_ident()))
        return np.zeros(len(rows), dtype=np.float32)

    queue = WorkQueue("m", [forward], batch_tokens=4, max_batch_size=8, before_pass=before)
    try:
        queue.submit("k", [[1, 2, 3], [4, 5, 6]], [3, 3], False, np.zeros(2, dtype=np.float32))  # two passes
    finally:
        queue.close()
    assert [what for what, _ in seen] == ["before", "pass", "before", "pass"]
    assert {thread for _, thread in seen} == {queue.workers[0].ident}
