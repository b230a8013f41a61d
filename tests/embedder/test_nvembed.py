"""NV-Embed against the reference's own outputs (golden.json of the shared tiny fixture), through the embedder.

Every golden case must match within atol 1e-5 in float32 on CPU, for every attention backend available here,
with the latent layer plain and folded, batched by our token budget and one text at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from nvrag.embedder.nvembed import NVEmbedEmbedder
from nvrag.errors import InstructionError
from nvrag.model import available_backends
from nvrag.model.prepack import prepack_supported
from nvrag.model.widened import WideLinear
from tests.conftest import NVEMBED_TINY

BACKENDS = available_backends(torch.device("cpu"), torch.float32)
ATOL = 1e-5
_cache: dict[tuple[str, int, bool, int], NVEmbedEmbedder] = {}


def embedder(
    backend: str = "sdpa", max_length: int = 32768, folded: bool = False, batch_tokens: int = 16384
) -> NVEmbedEmbedder:
    key = (backend, max_length, folded, batch_tokens)
    if key not in _cache:
        _cache[key] = NVEmbedEmbedder(
            NVEMBED_TINY, attention=backend, max_length=max_length, folded=folded, batch_tokens=batch_tokens
        )
    return _cache[key]


def cases(golden: dict[str, Any]) -> list[dict[str, Any]]:
    return list(golden["cases"])


def test_inputs_equal_the_reference_inputs(golden: dict[str, Any]) -> None:
    for case in cases(golden):
        e = embedder(max_length=case["max_length"])
        assert e.instruction_length(case["instruction"]) == case["instruction_lens"], case["name"]
        ids, attention, pool = e.build_inputs(e.tokenize(case["texts"], case["instruction"]), case["instruction"])
        assert ids.tolist() == case["input_ids"], case["name"]
        assert attention.tolist() == case["attention_mask"], case["name"]
        assert pool.tolist() == case["pool_mask"], case["name"]


@pytest.mark.parametrize("folded", [False, True], ids=["plain", "folded"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_golden_case_batched(golden: dict[str, Any], backend: str, folded: bool) -> None:
    for case in cases(golden):
        # a small token budget, so the longer cases are split over several length-sorted batches
        e = embedder(backend, case["max_length"], folded, batch_tokens=1024)
        got = e.embed_with_prefix(case["texts"], case["instruction"])
        np.testing.assert_allclose(got, np.array(case["embeddings"]), atol=ATOL, err_msg=case["name"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_golden_case_one_at_a_time(golden: dict[str, Any], backend: str) -> None:
    for case in cases(golden):
        e = embedder(backend, case["max_length"])
        for text, expected in zip(case["texts"], case["embeddings"], strict=True):
            got = e.embed_with_prefix([text], case["instruction"])[0]
            np.testing.assert_allclose(got, np.array(expected), atol=ATOL, err_msg=case["name"])


def test_card_scores(golden: dict[str, Any]) -> None:
    by_name = {c["name"]: c for c in golden["cases"]}
    queries, passages = by_name["card_queries"], by_name["card_passages"]
    e = embedder()
    q = e.embed_with_prefix(queries["texts"], queries["instruction"])
    p = e.embed_with_prefix(passages["texts"], "")
    np.testing.assert_allclose(100 * q @ p.T, golden["card_scores"], atol=1e-3)


def test_queries_through_the_template_equal_the_raw_instruction(golden: dict[str, Any]) -> None:
    case = next(c for c in golden["cases"] if c["name"] == "card_queries")
    e = embedder()
    # the card's instruction is the NV-Embed template around the default question-answering instruction
    np.testing.assert_allclose(e.embed_queries(case["texts"]), np.array(case["embeddings"]), atol=ATOL)
    np.testing.assert_allclose(
        e.embed_queries(case["texts"], instruction="Given a question, retrieve passages that answer the question"),
        np.array(case["embeddings"]),
        atol=ATOL,
    )


def test_documents_are_passage_mode(golden: dict[str, Any]) -> None:
    case = next(c for c in golden["cases"] if c["name"] == "passages6_batch")
    np.testing.assert_allclose(embedder(max_length=4096).embed_documents(case["texts"]), case["embeddings"], atol=ATOL)


def test_an_instruction_that_fills_max_length_raises_instead_of_nan(golden: dict[str, Any]) -> None:
    (case,) = golden["nan_cases"]
    e = embedder(max_length=case["max_length"])
    with pytest.raises(InstructionError, match="the instruction takes 18 tokens and the max length is 16"):
        e.embed_with_prefix(case["texts"], case["instruction"])


def test_bfloat16_agrees_with_float32(golden: dict[str, Any]) -> None:
    """bf16 keeps 8 bits of mantissa. Measured on the fixture: at most 0.0047 per coordinate from the float32
    reference and at least 0.99992 cosine similarity; the test allows 0.01 and 0.9995."""
    bf16 = NVEmbedEmbedder(NVEMBED_TINY, dtype="bfloat16", max_length=4096)
    # the layers' matmul weights in bfloat16 (on a CPU without bfloat16 arithmetic, computed in float32)
    matmul_weights = [p for n, p in bf16.model.named_parameters() if n.startswith("backbone.layers.") and p.dim() == 2]
    matmul_weights += [m.weight for m in bf16.model.modules() if isinstance(m, WideLinear)]
    assert matmul_weights and {w.dtype for w in matmul_weights} == {torch.bfloat16}
    for case in cases(golden):
        if case["max_length"] != 4096:
            continue
        got = bf16.embed_with_prefix(case["texts"], case["instruction"])
        expected = np.array(case["embeddings"])
        assert np.abs(got - expected).max() < 0.01, case["name"]
        assert (np.sum(got * expected, axis=1) > 0.9995).all(), case["name"]


def test_the_reported_model_identity() -> None:
    e = embedder()
    assert (e.name, e.dimension, e.info.max_tokens, e.info.license) == (
        "nvidia/NV-Embed-v2",
        64,
        32768,
        "CC-BY-NC-4.0",
    )
    assert e.info.revision.startswith("sha256:") and e.info.revision == NVEmbedEmbedder(NVEMBED_TINY).info.revision


def test_cpu_bfloat16_batches_are_padded_to_widths_of_16_with_masked_eos() -> None:
    from nvrag.embedder.nvembed import EOS_ID, _pad_width

    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    pool = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    padded_ids, padded_mask, padded_pool = _pad_width(ids, mask, pool, 16)
    assert padded_ids.shape == padded_mask.shape == padded_pool.shape == (2, 16)
    assert torch.equal(padded_ids[:, :4], ids) and bool((padded_ids[:, 4:] == EOS_ID).all())
    assert torch.equal(padded_mask[:, :4], mask) and int(padded_mask[:, 4:].sum()) == 0
    assert torch.equal(padded_pool[:, :4], pool) and int(padded_pool[:, 4:].sum()) == 0
    wide = torch.ones((1, 32), dtype=torch.long)
    assert _pad_width(wide, wide, wide, 32)[0] is wide  # already that wide: unchanged


@pytest.mark.skipif(not prepack_supported(), reason="this PyTorch or CPU cannot prepack bfloat16 weights")
def test_a_server_with_prepacked_weights_keeps_each_batch_at_its_own_width() -> None:
    """Padding to a width of 16 keeps oneDNN's per-shape kernels few for plain weights; once a server prepacked
    them the kernel takes any width and padded rows only cost time, so batches keep their longest row's."""
    bf16 = NVEmbedEmbedder(NVEMBED_TINY, dtype="bfloat16", max_length=4096)
    widths: list[int] = []
    bf16.model.register_forward_pre_hook(lambda module, args: widths.append(int(args[0].shape[1])))
    texts = ["what is a short query", "and another one"]
    plain = bf16.embed_with_prefix(texts, "Retrieve passages")
    before = widths[:]
    widths.clear()
    assert bf16.prepare_for_serving() is not None  # the backbone's matmul weights prepacked
    # and the latent layer's feed-forward; its projections are folded (released or unused)
    from nvrag.model.prepack import PackedLinear

    pool = bf16.model.pool
    assert isinstance(pool.ff_in, PackedLinear) and isinstance(pool.ff_out, PackedLinear)
    packed = bf16.embed_with_prefix(texts, "Retrieve passages")
    assert all(w % 16 == 0 for w in before) and not any(w % 16 == 0 for w in widths)  # padded, then not
    # the padding was masked out: the same vectors up to bfloat16 rounding (attention's blocks follow the width)
    assert np.abs(packed - plain).max() < 0.01 and (np.sum(packed * plain, axis=1) > 0.9995).all()


def test_instruction_lengths_are_remembered_for_the_recent_instructions_only() -> None:
    """A server's clients choose instructions: 3,000 distinct ones must not grow the embedder without bound,
    and a count evicted and asked again is still right."""
    from nvrag.embedder.nvembed import INSTRUCTION_CACHE_SIZE

    e = embedder("sdpa")
    first = e.instruction_length("Instruct: task number 0\nQuery: ")
    for i in range(3000):
        n = e.instruction_length(f"Instruct: task number {i}\nQuery: ")
        assert n == len(e._tokenizer.encode(f"Instruct: task number {i}\nQuery: ", add_special_tokens=False).ids)
    assert len(e._instruction_lens) == INSTRUCTION_CACHE_SIZE
    assert e.instruction_length("Instruct: task number 0\nQuery: ") == first  # evicted, then counted again


def test_a_folded_embedder_keeps_only_the_folded_latent_matrices() -> None:
    # NV-Embed-v2: the query, key/value and output projections are 1 GiB that the folded path never reads
    folded, plain = embedder(folded=True).model.pool, embedder(folded=False).model.pool
    assert folded.released and folded.to_kv.weight.numel() == 0
    assert not plain.released and plain.to_kv.weight.numel() > 0
