"""The decoder engine's paths against its readable one, on random weights of shapes no fixture has: every
variant (biases, q/k norm, llama3 RoPE, causal, a sliding window shorter than the inputs) and every pooling."""

from __future__ import annotations

import pytest
import torch

from nvrag.model import DecoderConfig, DecoderEmbeddingModel, PoolingSpec, available_backends
from nvrag.model.attention import eager_attention, sdpa_attention, varlen_attention
from nvrag.model.decoder_config import RopeConfig, decoder_config_from_hf

LLAMA3 = RopeConfig(theta=500000.0, kind="llama3", factor=8.0, original_max_position_embeddings=16)
VARIANTS = {
    "mistral-causal-window": DecoderConfig(family="mistral", causal=True, sliding_window=5),
    "llama-bidirectional-llama3": DecoderConfig(family="llama", causal=False, rope=LLAMA3, o_bias=True, mlp_bias=True),
    "qwen2-bidirectional-bias": DecoderConfig(family="qwen2", causal=False, qkv_bias=True),
    "qwen3-causal-qknorm": DecoderConfig(family="qwen3", causal=True, qk_norm=True, head_dim_override=10),
}
SHAPE = {
    "vocab_size": 90,
    "hidden_size": 24,
    "intermediate_size": 40,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
}
POOLINGS = ("last", "mean", "cls")


def build(name: str, pooling: str) -> DecoderEmbeddingModel:
    import dataclasses

    config = dataclasses.replace(VARIANTS[name], **SHAPE)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = DecoderEmbeddingModel(config, PoolingSpec(kind=pooling))  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    lengths = [9, 3, 12, 1]
    ids = torch.zeros((4, 12), dtype=torch.long)
    mask = torch.zeros((4, 12), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, 90, (n,))
        mask[row, :n] = 1
    pool = mask.clone()
    pool[0, :2] = 0  # a prompt left out of the mean
    return ids, mask, pool


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_path_agrees_with_eager(variant: str, pooling: str) -> None:
    model = build(variant, pooling)
    ids, mask, pool = batch()
    with torch.inference_mode():
        reference = model(ids, mask, pool, backend="eager")
        for backend in available_backends(torch.device("cpu"), torch.float32):
            got = model(ids, mask, pool, backend=backend)
            torch.testing.assert_close(got, reference, atol=2e-6, rtol=1e-5, msg=f"{backend}")
        alone = model(ids[0:1, :9], mask[0:1, :9], pool[0:1, :9], backend="eager")  # row 0 without its padding
    torch.testing.assert_close(reference[0:1], alone, atol=2e-6, rtol=1e-5)  # padding never changes a row


def test_causal_and_window_masks_by_hand() -> None:
    """Attention by the definition: query i sees keys j <= i (and i - j < window), never padding."""
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 2, 6, 4), torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    for window in (None, 2):
        expected = torch.zeros_like(q)
        for h in range(2):
            for i in range(6):
                seen = [j for j in range(5) if j <= i and (window is None or i - j < window)]
                scores = torch.stack([q[0, h, i] @ k[0, 0, j] for j in seen]) / 2.0
                expected[0, h, i] = torch.softmax(scores, 0) @ v[0, 0, seen]
        for attend in (eager_attention, sdpa_attention):
            torch.testing.assert_close(attend(q, k, v, mask, causal=True, window=window), expected)
        packed = varlen_attention(
            q[0].transpose(0, 1)[:5], k[0].transpose(0, 1)[:5], v[0].transpose(0, 1)[:5], torch.tensor([0, 5]),
            causal=True, window=window,
        )  # fmt: skip
        torch.testing.assert_close(packed, expected[0].transpose(0, 1)[:5])


def test_config_reads_both_layouts() -> None:
    base = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip
    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}  # fmt: skip
    v4 = decoder_config_from_hf(base | {"rope_theta": 500000.0, "rope_scaling": scaling, "torch_dtype": "bfloat16"})
    v5 = decoder_config_from_hf(base | {"rope_parameters": scaling | {"rope_theta": 500000.0}, "dtype": "bfloat16"})
    assert v4 == v5 and v4.rope.kind == "llama3" and v4.rope.theta == 500000.0 and v4.causal
    assert not decoder_config_from_hf(base | {"is_causal": False}).causal
    qwen2 = decoder_config_from_hf(base | {"model_type": "qwen2"})
    assert (qwen2.qkv_bias, qwen2.o_bias, qwen2.qk_norm) == (True, False, False)
    qwen3 = decoder_config_from_hf(base | {"model_type": "qwen3", "head_dim": 6})
    assert (qwen3.qk_norm, qwen3.head_dim, qwen3.qkv_bias) == (True, 6, False)
