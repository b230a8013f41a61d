"""The bundled MiniLM against sentence-transformers, the library the model was published for."""

from __future__ import annotations

import numpy as np
import pytest

from nvrag.embedder.minilm import MiniLMEmbedder, bundled_minilm_path

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Statins and breast cancer survival: a nationwide cohort study from Finland. " * 20,  # > 256 tokens
    "café naïve résumé — unicode text",
    "short",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_minilm_path()), device="cpu")
    assert model.max_seq_length == 256
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True, batch_size=2))


def test_documents_equal_sentence_transformers(minilm: MiniLMEmbedder, reference: np.ndarray) -> None:
    ours = minilm.embed_documents(TEXTS)
    assert ours.shape == (5, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.ones(5), atol=1e-6)


def test_batching_does_not_change_vectors(reference: np.ndarray) -> None:
    tiny_budget = MiniLMEmbedder(batch_tokens=256)  # one long text per batch, short ones grouped
    np.testing.assert_allclose(tiny_budget.embed_documents(TEXTS), reference, atol=1e-5)


def test_queries_take_no_instruction(minilm: MiniLMEmbedder) -> None:
    assert not minilm.info.takes_instructions
    np.testing.assert_array_equal(
        minilm.embed_queries(["short"], instruction="ignored"), minilm.embed_documents(["short"])
    )


def test_token_spans_point_into_the_text(minilm: MiniLMEmbedder) -> None:
    text = "Hello, World! café"
    spans = minilm.token_spans(text)
    assert [text[a:b] for a, b in spans] == ["Hello", ",", "World", "!", "café"]
    assert minilm.max_text_tokens == 254


def test_token_spans_of_a_long_text_equal_the_whole_texts(minilm: MiniLMEmbedder) -> None:
    """Long texts are tokenised in windows cut at whitespace (bounded memory): the spans are exactly those of
    tokenising the whole text at once."""
    import random

    rng = random.Random(3)
    pieces = ["word", "naïve", "ünïcode", "東京", "x" * 130, "punct,uation", "dash-ed", "\n\n", "\t", "don't", "..."]
    text = " ".join(rng.choice(pieces) for _ in range(60_000))
    assert len(text) > 3 * 100_000
    whole = list(minilm._spans_tokenizer.encode(text, add_special_tokens=False).offsets)
    assert minilm.token_spans(text) == whole
