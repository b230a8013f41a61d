"""One model replica per device on one machine: ``--devices cuda:0,cuda:1`` (or ``auto``: every visible GPU) on
the command line.

The replicas compose under the one batching core (``work_queue.WorkQueue``): each replica's forward pass is a
worker of it, taking the next pass as soon as it is free, so a fast device does more of the work and a slow
one never holds the rest up. A served model wraps the replicas in its Scheduler (``replica_set``); used
directly (`nvrag index --devices`), the replicas share a Scheduler of their own with no admission bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nvrag.embedder.base import Embedder, FloatArray
from nvrag.errors import ConfigError

if TYPE_CHECKING:
    from nvrag.embedder.scheduler import Scheduler


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
        self.dtype_reason = first.dtype_reason
        sizes = [r.weight_bytes for r in self.replicas]
        self.weight_bytes = None if None in sizes else sum(s for s in sizes if s is not None)
        self._scheduler: Scheduler | None = None  # started on first use (its workers are threads)

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

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.queue.close()
        for replica in self.replicas:
            replica.close()

    def _embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        """Through a Scheduler of its own (one worker per replica) with no admission bounds: one caller's work."""
        if self._scheduler is None:
            from nvrag.embedder.scheduler import Scheduler

            self._scheduler = Scheduler(self, max_queued=1 << 30, max_queued_tokens=1 << 62, max_queue_seconds=None)
        return self._scheduler.embed_counted(texts, prefix)
