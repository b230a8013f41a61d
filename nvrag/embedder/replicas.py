"""One model replica per device on one machine: batches spread over the replicas by token count, results in
input order. ``--devices cuda:0,cuda:1`` (or ``auto``: every visible GPU) on the command line."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nvrag.embedder.base import Embedder, FloatArray, normalise, token_budget_batches
from nvrag.errors import ConfigError


def assign_batches(batches: Sequence[Sequence[int]], lengths: Sequence[int], replicas: int) -> list[list[int]]:
    """Indices of ``batches`` per replica, balancing padded tokens: the largest batch goes to the replica with the
    fewest tokens so far (longest-processing-time first); ties go to the lower replica number."""
    load = [(0, r) for r in range(replicas)]
    plan: list[list[int]] = [[] for _ in range(replicas)]
    cost = [len(b) * max(lengths[i] for i in b) for b in batches]
    for b in sorted(range(len(batches)), key=lambda i: (-cost[i], i)):
        tokens, r = heapq.heappop(load)
        plan[r].append(b)
        heapq.heappush(load, (tokens + cost[b], r))
    return plan


class ReplicatedEmbedder(Embedder):
    """Several copies of one model (one per device) behind the Embedder interface."""

    def __init__(self, replicas: Sequence[Embedder]) -> None:
        if not replicas:
            raise ConfigError("at least one device is needed")
        first = replicas[0]
        for other in replicas[1:]:
            if other.info != first.info:
                raise ConfigError(f"replicas of different models: {first.name} and {other.name}")
        super().__init__(first.info, batch_tokens=first.batch_tokens, max_batch_size=first.max_batch_size)
        self.replicas = list(replicas)
        self.notes = first.notes  # how the model loaded (its dtype's reason): the same for every replica
        self._pool = ThreadPoolExecutor(max_workers=len(self.replicas), thread_name_prefix="nvrag-replica")

    @property
    def special_tokens(self) -> int:
        return self.replicas[0].special_tokens

    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        return self.replicas[0].tokenize(texts, prefix)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.replicas[0].token_spans(text)

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        return self.replicas[0].forward(batch, prefix)

    def replica_set(self) -> Sequence[Embedder]:
        return tuple(self.replicas)

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        lines = [line for replica in self.replicas if (line := replica.prepare_for_serving(busy))]
        return "; ".join(lines) or None

    def _embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out, 0
        ids = self.tokenize(texts, prefix)
        lengths = [len(x) for x in ids]
        batches = token_budget_batches(lengths, self.batch_tokens, self.max_batch_size)
        plan = assign_batches(batches, lengths, len(self.replicas))

        def run(replica: Embedder, mine: list[int]) -> None:
            for b in mine:
                out[batches[b]] = replica.forward([ids[i] for i in batches[b]], prefix)

        # torch releases the GIL inside its kernels, so one thread per device keeps every device busy
        futures = [self._pool.submit(run, r, mine) for r, mine in zip(self.replicas, plan, strict=True) if mine]
        for future in futures:
            future.result()
        return normalise(out), sum(lengths)
