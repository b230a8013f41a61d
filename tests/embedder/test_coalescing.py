"""Dynamic batching: concurrent calls merged into shared forward passes, each caller getting exactly its own
rows; a full queue refused at once; a failing batch failing only its callers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.embedder.base import FloatArray
from nvrag.embedder.coalescing import CoalescingEmbedder
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.errors import OverloadedError


class Gate(WordLengthEmbedder):
    """The fake model, whose first forward pass waits for the test to open the gate (so that work queues up)."""

    def __init__(self) -> None:
        super().__init__(batch_tokens=10_000)
        self.entered, self.gate = threading.Event(), threading.Event()
        self.fail_on: str | None = None

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        self.entered.set()
        self.gate.wait(timeout=60)
        if self.fail_on is not None and prefix == self.fail_on:
            raise RuntimeError("the device fell over")
        return super().forward(batch, prefix)


def texts(n: int) -> list[str]:
    return [" ".join("w" * (1 + (i * j) % 7) for j in range(1 + i % 5)) for i in range(n)]


def test_waiting_calls_share_one_forward_pass_and_each_gets_its_own_rows() -> None:
    inner = Gate()
    seen: list[tuple[int, int]] = []
    batcher = CoalescingEmbedder(inner, on_batch=lambda rows, jobs: seen.append((rows, jobs)))
    alone = WordLengthEmbedder()
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(batcher.embed_documents, ["the first call holds the worker"])
        assert inner.entered.wait(timeout=60)
        calls = [texts(i + 1) for i in range(10)]
        futures = [pool.submit(batcher.embed_documents, c) for c in calls]
        queries = pool.submit(batcher.embed_queries, ["a query"], instruction="find")
        while batcher.queued < 11:
            threading.Event().wait(0.01)
        inner.gate.set()
        np.testing.assert_array_equal(first.result(), alone.embed_documents(["the first call holds the worker"]))
        for c, f in zip(calls, futures, strict=True):
            np.testing.assert_array_equal(f.result(), alone.embed_documents(c))
        np.testing.assert_array_equal(queries.result(), alone.embed_queries(["a query"], instruction="find"))
    # the first call alone; then the ten document calls' 55 rows in fewer passes than calls (rows of like
    # lengths together, the one-token rows of all ten in one pass); the query (another prefix) apart
    first_pass, *middle, last = seen
    assert first_pass == (1, 1) and last == (1, 1)
    assert sum(rows for rows, _ in middle) == 55 and len(middle) < 10 and max(jobs for _, jobs in middle) == 10


def test_a_full_queue_refuses_at_once_and_a_failed_batch_fails_only_its_callers() -> None:
    inner = Gate()
    batcher = CoalescingEmbedder(inner, max_queued=2)
    with ThreadPoolExecutor(4) as pool:
        held = pool.submit(batcher.embed_documents, ["held"])
        assert inner.entered.wait(timeout=60)
        inner.fail_on = "find: "
        queued = [
            pool.submit(batcher.embed_queries, ["q"], instruction="find"),
            pool.submit(batcher.embed_documents, ["d"]),
        ]
        while batcher.queued < 2:
            threading.Event().wait(0.01)
        with pytest.raises(OverloadedError, match=r"^2 embedding requests are already queued for nvrag/fake-wordlen"):
            batcher.embed_documents(["one too many"])
        inner.gate.set()
        assert held.result().shape == (1, 8)
        with pytest.raises(RuntimeError, match="the device fell over"):
            queued[0].result()
        np.testing.assert_array_equal(queued[1].result(), WordLengthEmbedder().embed_documents(["d"]))
    inner.fail_on = None
    assert batcher.embed_documents(["the worker lives on"]).shape == (1, 8)
    assert batcher.embed_documents([]).shape == (0, 8)


def test_minilm_through_the_batcher_equals_minilm_alone(minilm: MiniLMEmbedder) -> None:
    batcher = CoalescingEmbedder(minilm)
    calls = [texts(n) for n in (1, 3, 8, 2, 13, 1, 5)] + [["a much longer text about many things " * 30]]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(batcher.embed_documents, calls))
    for c, g in zip(calls, got, strict=True):
        np.testing.assert_allclose(g, minilm.embed_documents(c), atol=1e-6)
    vectors, tokens = batcher.embed_counted(["hello world"], "")
    assert tokens == 4 and vectors.shape == (1, 384)  # [CLS] hello world [SEP]
