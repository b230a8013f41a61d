"""Replicas on several devices, tested with two CPU "devices": the work shared, the input order kept."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from nvrag.embedder import LoadOptions, WordLengthEmbedder, load_embedder
from nvrag.embedder.base import FloatArray
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.embedder.replicas import ReplicatedEmbedder
from nvrag.errors import ConfigError

TEXTS = [" ".join(["w"] * n) + f" x{i}" for i, n in enumerate([1, 40, 3, 20, 20, 2, 30, 5, 9, 12])]


class Meeting(WordLengthEmbedder):
    """A replica whose first forward pass waits (a guard of 60 s) until the other replica is in one too: the
    test then shows both devices compute at once, whatever the threads' timing."""

    def __init__(self, meet: threading.Barrier) -> None:
        super().__init__(batch_tokens=64)
        self.meet = meet

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        if not self.forward_calls:
            self.meet.wait(timeout=60)
        return super().forward(batch, prefix)


def test_two_replicas_give_the_single_models_vectors_in_input_order() -> None:
    meet = threading.Barrier(2)
    first, second = Meeting(meet), Meeting(meet)
    first.notes = second.notes = ("dtype: bfloat16, since ...",)
    pooled = ReplicatedEmbedder([first, second])
    assert pooled.notes == first.notes  # the CLI prints the loaded model's notes: a replicated one keeps them
    single = WordLengthEmbedder(batch_tokens=64)
    np.testing.assert_array_equal(pooled.embed_documents(TEXTS), single.embed_documents(TEXTS))
    np.testing.assert_array_equal(pooled.embed_queries(TEXTS, "q"), single.embed_queries(TEXTS, "q"))
    assert first.forward_calls and second.forward_calls  # both computed, at the same time
    assert sum(first.forward_calls) + sum(second.forward_calls) == 2 * len(TEXTS)
    assert pooled.embed_counted([], "")[0].shape == (0, 8)


def test_minilm_replicas_on_two_cpu_devices(minilm: MiniLMEmbedder) -> None:
    pooled = load_embedder(
        "all-MiniLM-L6-v2", LoadOptions(devices=("cpu", "cpu"), batch_tokens=512, dtype="float32")
    )  # exact, to compare with the float32 fixture
    assert isinstance(pooled, ReplicatedEmbedder) and len(pooled.replicas) == 2
    texts = [f"sentence number {i} about topic {i % 4}" * (1 + i % 5) for i in range(24)]
    np.testing.assert_allclose(pooled.embed_documents(texts), minilm.embed_documents(texts), atol=1e-5)


def test_replicas_must_be_one_model() -> None:
    with pytest.raises(ConfigError, match="replicas of different models"):
        ReplicatedEmbedder([WordLengthEmbedder(), WordLengthEmbedder(dimension=4)])
    with pytest.raises(ConfigError, match="at least one device"):
        ReplicatedEmbedder([])
