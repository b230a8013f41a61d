"""The Embedder base: hand-computed vectors, batching under a token budget, input order, instructions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.embedder.base import token_budget_batches
from nvrag.errors import InstructionError


def test_document_vectors_are_the_hand_computed_histograms(fake: WordLengthEmbedder) -> None:
    vectors = fake.embed_documents(["a bb bb", "ccc"])
    expected = np.zeros((2, 8), dtype=np.float32)
    expected[0, 0], expected[0, 1] = 1 / math.sqrt(5), 2 / math.sqrt(5)
    expected[1, 2] = 1.0
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-7)


def test_query_instruction_is_prepended_through_the_template(fake: WordLengthEmbedder) -> None:
    # "find: a" -> words "find" (4) and "a" (1): [1, 0, 0, 1, ...] / sqrt(2)
    (vector,) = fake.embed_queries(["a"], instruction="find")
    expected = np.zeros(8, dtype=np.float32)
    expected[0] = expected[3] = 1 / math.sqrt(2)
    np.testing.assert_allclose(vector, expected, atol=1e-7)
    # the default instruction "query" (5 letters) applies when none is given
    (default,) = fake.embed_queries(["a"])
    assert default[4] == pytest.approx(1 / math.sqrt(2))


def test_blank_instruction_for_a_model_that_needs_one_is_refused(fake: WordLengthEmbedder) -> None:
    with pytest.raises(InstructionError, match="needs a query instruction"):
        fake.embed_queries(["a"], instruction="   ")


def test_batches_respect_the_token_budget_and_order_is_restored() -> None:
    embedder = WordLengthEmbedder(max_tokens=64, batch_tokens=64)
    texts = [" ".join(["w"] * n) for n in (1, 40, 3, 20, 20, 2)]
    vectors = embedder.embed_documents(texts)
    # longest first: 40 alone (2 x 40 > 64); 20, 20; then 3, 2 and 1 each shorter than 3/4 of the one before
    assert embedder.forward_calls == [1, 2, 1, 1, 1]
    # every text is one word length repeated, so each vector is the unit vector e0, whatever the batch
    np.testing.assert_allclose(vectors[:, 0], np.ones(6), atol=1e-7)
    # order: a mixed input keeps its own row
    mixed = embedder.embed_documents(["bb", "a", "ccc cc"])
    assert np.argmax(mixed[0]) == 1 and np.argmax(mixed[1]) == 0 and mixed[2][1] == mixed[2][2]


def test_token_budget_batches_bound_tokens_rows_and_padding() -> None:
    lengths = [1, 40, 3, 20, 20, 2, 19]
    # budget only: 40 alone (2 x 40 > 64); 20, 20, 19 (3 x 20 = 60); 3, 2, 1
    assert token_budget_batches(lengths, 64, 100, min_fill=0.0) == [[1], [3, 4, 6], [2, 5, 0]]
    # the row cap
    assert token_budget_batches(lengths, 64, 2, min_fill=0.0) == [[1], [3, 4], [6, 2], [5, 0]]
    # padding bound: 3 < 0.75 x 19 starts a new batch, and so do 2 (< 2.25) and 1 (< 1.5)
    assert token_budget_batches(lengths, 64, 100) == [[1], [3, 4, 6], [2], [5], [0]]
    # a row longer than the budget still gets a batch
    assert token_budget_batches([100, 5], 64, 100) == [[0], [1]]


def test_empty_input_gives_an_empty_array(fake: WordLengthEmbedder) -> None:
    assert fake.embed_documents([]).shape == (0, 8)


def test_truncation_to_the_model_limit() -> None:
    embedder = WordLengthEmbedder(max_tokens=3)
    (vector,) = embedder.embed_documents(["a a a bb bb bb"])
    np.testing.assert_allclose(vector[:2], [1.0, 0.0], atol=1e-7)
