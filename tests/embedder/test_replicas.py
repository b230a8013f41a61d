"""Replicas on several devices, tested with two CPU "devices": the split by tokens and the input order."""

from __future__ import annotations

import numpy as np
import pytest

from nvrag.embedder import LoadOptions, WordLengthEmbedder, load_embedder
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.embedder.replicas import ReplicatedEmbedder, assign_batches
from nvrag.errors import ConfigError

TEXTS = [" ".join(["w"] * n) + f" x{i}" for i, n in enumerate([1, 40, 3, 20, 20, 2, 30, 5, 9, 12])]


def test_batches_are_balanced_by_padded_tokens() -> None:
    lengths = [10, 10, 8, 6, 3]
    batches = [[0], [1], [2], [3, 4]]  # padded costs: 10, 10, 8, 12
    # largest first: 12 -> r0, 10 -> r1, 10 -> r2... with two replicas: 12 -> r0, 10 -> r1, 10 -> r1 (10 < 12),
    # 8 -> r0 (12 < 20)
    assert assign_batches(batches, lengths, 2) == [[3, 2], [0, 1]]
    assert assign_batches(batches, lengths, 1) == [[3, 0, 1, 2]]


def test_two_replicas_give_the_single_models_vectors_in_input_order() -> None:
    first, second = WordLengthEmbedder(batch_tokens=64), WordLengthEmbedder(batch_tokens=64)
    first.notes = second.notes = ("dtype: bfloat16, since ...",)
    pooled = ReplicatedEmbedder([first, second])
    assert pooled.notes == first.notes  # the CLI prints the loaded model's notes: a replicated one keeps them
    single = WordLengthEmbedder(batch_tokens=64)
    np.testing.assert_array_equal(pooled.embed_documents(TEXTS), single.embed_documents(TEXTS))
    np.testing.assert_array_equal(pooled.embed_queries(TEXTS, "q"), single.embed_queries(TEXTS, "q"))
    assert first.forward_calls and second.forward_calls  # both did work
    assert sum(first.forward_calls) + sum(second.forward_calls) == 2 * len(TEXTS)


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
