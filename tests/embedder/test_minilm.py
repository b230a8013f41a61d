"""The bundled MiniLM against sentence-transformers, the library the model was published for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvrag.embedder.minilm import MiniLMEmbedder, bundled_minilm_path
from nvrag.errors import CheckpointError, ConfigError

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


def test_the_numpy_and_torch_engines_compute_the_same_vectors(reference: np.ndarray) -> None:
    on_numpy, on_torch = MiniLMEmbedder(engine="numpy"), MiniLMEmbedder(engine="torch")
    queries = ["what causes the common cold?", "a", "café naïve résumé — unicode text " * 8]
    np.testing.assert_allclose(on_numpy.embed_queries(queries), on_torch.embed_queries(queries), atol=1e-6)
    np.testing.assert_allclose(on_numpy.embed_documents(TEXTS), reference, atol=1e-5)  # padding and 256 tokens
    assert on_numpy._model is None and on_torch._numpy_model is None  # each ran on its own engine only


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cpu_batches_reach_the_encoder_in_widths_of_16_and_the_padding_changes_nothing(dtype: str) -> None:
    # few batch shapes keep oneDNN's per-shape kernels few (dtypes.cpu_batch_width); the padding is masked
    padded, unpadded = MiniLMEmbedder(dtype=dtype, engine="torch"), MiniLMEmbedder(engine="numpy")
    widths: list[int] = []
    padded.model.register_forward_pre_hook(lambda _module, args: widths.append(args[0].shape[1]))
    texts = ["short", "a text of a few more words than that", "Statins and survival. " * 80]  # 3, 11, 256 tokens
    vectors = padded.embed_documents(texts)
    assert widths and all(w % 16 == 0 for w in widths) and max(widths) == 256
    np.testing.assert_allclose(vectors, unpadded.embed_documents(texts), atol=1e-6 if dtype == "float32" else 3e-2)


def test_auto_sends_small_float32_cpu_batches_to_numpy_and_the_rest_to_torch() -> None:
    from nvrag.embedder.minilm import NUMPY_MAX_TOKENS

    auto = MiniLMEmbedder(engine="auto")
    assert auto.uses_numpy(1, 12) and auto.uses_numpy(2, NUMPY_MAX_TOKENS // 2)
    assert not auto.uses_numpy(2, NUMPY_MAX_TOKENS // 2 + 1)
    assert not MiniLMEmbedder(dtype="bfloat16", engine="auto").uses_numpy(1, 12)
    assert not MiniLMEmbedder().uses_numpy(1, 12)  # the default engine is PyTorch
    first = auto.embed_queries(["one short query"])
    assert auto._numpy_model is not None and auto._model is None
    auto.embed_documents(["a longer document " * 100] * 2)  # over the limit: PyTorch
    assert auto._model is not None and auto.uses_numpy(1, 12)  # the batch alone decides, not what ran before
    np.testing.assert_array_equal(auto.embed_queries(["one short query"]), first)
    with pytest.raises(ConfigError, match="NumPy engine computes float32 on the CPU only"):
        MiniLMEmbedder(engine="numpy", dtype="bfloat16")
    with pytest.raises(ConfigError, match="unknown engine 'jax'"):
        MiniLMEmbedder(engine="jax")  # type: ignore[arg-type]


def test_a_checkpoint_numpy_cannot_read_runs_on_torch(tmp_path: Path) -> None:
    """A bfloat16 BERT (a --model-path folder): auto falls back to PyTorch; the NumPy engine says why not."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "bf16"
    shutil.copytree(bundled_minilm_path(), folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(folder / "model.safetensors"))
    auto = MiniLMEmbedder(folder, engine="auto")
    assert not auto.uses_numpy(1, 12)
    exact = MiniLMEmbedder().embed_queries(["a short query"])
    assert float(np.sum(auto.embed_queries(["a short query"]) * exact)) > 0.999
    with pytest.raises(CheckpointError, match="stored as BF16, which NumPy cannot read"):
        MiniLMEmbedder(folder, engine="numpy").embed_queries(["a short query"])
