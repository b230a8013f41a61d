"""The fast paths against the readable ones, on random weights of a shape other than the fixture's."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model import (
    LatentConfig,
    NVEmbedConfig,
    NVEmbedModel,
    available_backends,
    load_model,
    nvembed_text_config,
)
from nvrag.model.attention import PACKED_BACKENDS, eager_attention, sdpa_attention, varlen_attention
from nvrag.model.pooling import PoolingKind, kept_bounds, pool_packed, read_tokens
from tests.model.test_residency import mapping_of

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from realshape import write_checkpoint

CONFIG = NVEmbedConfig(
    text=nvembed_text_config(
        vocab_size=100,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=3,
    ),
    latent=LatentConfig(num_latents_value=12, num_cross_heads=3, cross_dim_head=20, hidden_dim=48, latent_dim=48),
)


def random_model() -> NVEmbedModel:
    torch.manual_seed(0)
    m = NVEmbedModel(CONFIG)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    return m.eval().prepare()


@pytest.fixture(scope="module")
def model() -> NVEmbedModel:
    return random_model()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    lengths = [7, 3, 12, 1]
    ids = torch.full((4, 12), 2)
    attention = torch.zeros((4, 12), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, 100, (n,))
        attention[row, :n] = 1
    pool = attention.clone()
    pool[:2, :2] = 0  # an instruction prefix on the first two rows
    pool[1, :2] = 1
    return ids, attention, pool


def test_attention_backends_agree_with_eager() -> None:
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 6, 5, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    reference = eager_attention(q, k, v, mask)
    torch.testing.assert_close(sdpa_attention(q, k, v, mask), reference, atol=1e-6, rtol=1e-5)
    # packed: only the real tokens, one sequence after the other
    real = mask.bool()
    packed = varlen_attention(
        q.transpose(1, 2)[real], k.transpose(1, 2)[real], v.transpose(1, 2)[real], torch.tensor([0, 3, 8])
    )
    torch.testing.assert_close(packed, reference.transpose(1, 2)[real], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", available_backends(torch.device("cpu"), torch.float32))
@pytest.mark.parametrize("folded", [False, True])
def test_model_backends_and_folding_agree(model: NVEmbedModel, backend: str, folded: bool) -> None:
    ids, attention, pool = padded_batch()
    with torch.inference_mode():
        reference = model(ids, attention, pool, backend="eager", folded=False)
        got = model(ids, attention, pool, backend=backend, folded=folded)  # type: ignore[arg-type]
    torch.testing.assert_close(got, reference, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(4), atol=1e-6, rtol=0)


def test_padding_does_not_change_a_row(model: NVEmbedModel) -> None:
    ids, attention, pool = padded_batch()
    with torch.inference_mode():
        batched = model(ids, attention, pool)
        alone = model(ids[2:3], attention[2:3], pool[2:3])
    torch.testing.assert_close(batched[2:3], alone, atol=1e-6, rtol=1e-5)


def test_latent_keys_and_values_are_computed_once(model: NVEmbedModel) -> None:
    calls: list[int] = []
    handle = model.pool.to_kv.register_forward_hook(lambda *_: calls.append(1))
    try:
        ids, attention, pool = padded_batch()
        with torch.inference_mode():
            model(ids, attention, pool)
            model(ids, attention, pool, folded=True)
    finally:
        handle.remove()
    assert calls == []


def test_bfloat16_folding_rounds_the_float32_products_once(model: NVEmbedModel) -> None:
    """In bfloat16 the folded matrices are computed in bfloat16 (float32 accumulation): each entry is within one
    bfloat16 step of the float32 product of the same bfloat16 weights (the summation order, and a scale that is
    not a power of two, can tip the rounding), and the folded path embeds as the plain one does."""
    a32, b32 = model.pool.folded_weights()  # float32 weights: computed in float32
    half = NVEmbedModel(CONFIG)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16).eval().prepare()
    assert half.pool._folded is not None
    # the reference: the bfloat16 weights' products in float32, rounded once
    pool = half.pool
    kv = tuple(t.float() for t in pool.latent_kv())
    heads, d = CONFIG.latent.num_cross_heads, CONFIG.latent.cross_dim_head
    w_q = pool.to_q.weight.float().view(heads, d, -1)
    want_a = (torch.einsum("hdw,hnd->whn", w_q, kv[0]) / d**0.5).reshape(a32.shape)
    w_out = pool.to_out.weight.float().view(-1, heads, d).transpose(0, 1)
    want_b = torch.einsum("hnd,hwd->hnw", kv[1], w_out).reshape(b32.shape)
    for got, want in zip(half.pool._folded, (want_a, want_b), strict=True):
        ulp = (want.abs() * 2.0**-7).clamp_min(1e-30)  # one bfloat16 step at each value
        assert bool(((got.float() - want).abs() <= ulp).all())
    ids, attention, pool_mask = padded_batch()
    with torch.inference_mode():
        plain = half(ids, attention, pool_mask, folded=False)
        folded = half(ids, attention, pool_mask, folded=True)
    assert float(torch.nn.functional.cosine_similarity(plain, folded).min()) > 0.999


def test_a_released_latent_layer_pools_as_before_and_refuses_the_plain_path() -> None:
    m = random_model()  # its own: this one is changed
    ids, attention, pool = padded_batch()
    with torch.inference_mode():
        before = m(ids, attention, pool, folded=True)
        m.pool.release_projections()
        assert torch.equal(m(ids, attention, pool, folded=True), before)
        with pytest.raises(RuntimeError, match="folded=True"):
            m(ids, attention, pool, folded=False)
    assert [layer.weight.numel() for layer in (m.pool.to_q, m.pool.to_kv, m.pool.to_out)] == [0, 0, 0]


def test_releasing_needs_the_folded_matrices_first() -> None:
    with pytest.raises(RuntimeError, match="prepare"):
        NVEmbedModel(CONFIG).pool.release_projections()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps")
def test_released_projections_leave_memory_when_mapped_from_the_checkpoint(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "small", "small", dtype=torch.bfloat16, shards=1)
    model = load_model(tmp_path / "small", dtype=torch.bfloat16)  # stored in bf16: views of the mapped shard
    pool = model.pool
    address = pool.to_kv.weight.data_ptr()
    released_kib = sum(layer.weight.numel() * 2 for layer in (pool.to_q, pool.to_kv, pool.to_out)) // 1024
    ids = torch.randint(3, 1000, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    with torch.inference_mode():
        want = model(ids, mask, mask, folded=True)
        _, _, before = mapping_of(address)
        pool.release_projections()
        _, _, after = mapping_of(address)
        assert torch.equal(model(ids, mask, mask, folded=True), want)
    assert before - after >= 0.9 * released_kib


def test_a_folded_only_load_gives_the_folded_vectors_without_the_projections(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "small", "small", dtype=torch.bfloat16, shards=1)
    full = load_model(tmp_path / "small", dtype=torch.bfloat16)
    lean = load_model(tmp_path / "small", dtype=torch.bfloat16, folded_only=True)
    assert lean.pool.released and not full.pool.released
    ids = torch.randint(3, 1000, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    with torch.inference_mode():
        assert torch.equal(lean(ids, mask, mask, folded=True), full(ids, mask, mask, folded=True))


def test_a_mean_reads_the_weighed_tokens_with_their_sequences_bounds() -> None:
    hidden = torch.arange(7.0)[:, None]  # token t's state is t
    weights = torch.tensor([0, 0, 1, 1, 0, 1, 1])  # sequences [0, 4) with a 2-token prefix, [4, 5), [5, 7)
    cu_seqlens = torch.tensor([0, 4, 5, 7])
    keep = read_tokens("mean", weights, cu_seqlens)
    bounds = kept_bounds(keep, cu_seqlens)
    assert hidden[keep][:, 0].tolist() == [2.0, 3.0, 5.0, 6.0]
    assert bounds.tolist() == [0, 2, 2, 4]  # the second sequence keeps nothing: it pools to zero
    pooled = pool_packed(hidden[keep], weights[keep], bounds, "mean")
    assert pooled[:, 0].tolist() == [2.5, 0.0, 5.5]


@pytest.mark.parametrize(("kind", "tokens"), [("last", [3, 4, 6]), ("cls", [0, 4, 5])])
def test_last_and_first_token_pooling_read_one_token_a_sequence(kind: PoolingKind, tokens: list[int]) -> None:
    hidden = torch.arange(7.0)[:, None]
    cu_seqlens = torch.tensor([0, 4, 5, 7])
    keep = read_tokens(kind, torch.ones(7), cu_seqlens)
    assert keep.nonzero()[:, 0].tolist() == tokens
    bounds = kept_bounds(keep, cu_seqlens)
    assert bounds.tolist() == [0, 1, 2, 3]
    assert pool_packed(hidden[keep], torch.ones(3), bounds, kind)[:, 0].tolist() == [float(t) for t in tokens]


@pytest.mark.parametrize("backend", available_backends(torch.device("cpu"), torch.float32))
def test_the_latent_layer_sees_only_the_pooled_tokens_and_pools_as_over_every_token(
    model: NVEmbedModel, backend: str
) -> None:
    """The latent layer acts on each token alone and the mean leaves the instruction out, so it runs on the
    pooled tokens only: the vectors of running it on every real token and pooling after."""
    ids, attention, pool = padded_batch()
    seen: list[int] = []
    handle = model.pool.register_forward_pre_hook(lambda module, args: seen.append(int(args[0].shape[0])))
    try:
        with torch.inference_mode():
            got = model(ids, attention, pool, backend=backend, folded=True)  # type: ignore[arg-type]
            batch = model.backbone.padded_batch(attention, "eager", model.dtype)
            every = model.pool(model.backbone(ids, batch), folded=True)  # (B, L, H): every position
            weights = pool.unsqueeze(-1).float()
            expected = F.normalize((every * weights).sum(dim=1) / weights.sum(dim=1), dim=-1)
    finally:
        handle.remove()
    assert seen[0] == int(pool.sum())  # 23 real tokens, 21 pooled
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", available_backends(torch.device("cpu"), torch.float32))
def test_the_last_layer_finishes_only_the_pooled_tokens_with_every_tokens_vectors(
    model: NVEmbedModel, backend: str
) -> None:
    """Nothing after the last layer's attention mixes tokens: its output projection and MLP (and the final norm)
    run on the tokens the mean keeps, while every real token is still a key and a value there. The vectors are
    those of finishing every token and pooling after."""
    ids, attention, pool = padded_batch()
    rows: dict[str, int] = {}

    def count(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            rows.setdefault(name, args[0].shape[-2])

        return hook

    layers = model.backbone.layers
    hooks = [
        layers[0].mlp.register_forward_pre_hook(count("first mlp")),
        layers[-1].attn.k.register_forward_pre_hook(count("last k")),
        layers[-1].mlp.register_forward_pre_hook(count("last mlp")),
    ]
    try:
        with torch.inference_mode():
            got = model(ids, attention, pool, backend=backend, folded=True)  # type: ignore[arg-type]
    finally:
        for hook in hooks:
            hook.remove()
    real, pooled = int(attention.sum()), int(pool.sum())
    if backend in PACKED_BACKENDS:  # (T, H): every real token
        assert rows == {"first mlp": real, "last k": real, "last mlp": pooled}
    else:  # (B, L, H) padded, then the kept tokens packed
        assert rows == {"first mlp": 12, "last k": 12, "last mlp": pooled}
    with torch.inference_mode():
        states = model.backbone(ids, model.backbone.padded_batch(attention, "eager", model.dtype))
        every = model.pool(states, folded=True)  # every position finished, then the latent layer
        weights = pool.unsqueeze(-1).float()
        expected = F.normalize((every * weights).sum(dim=1) / weights.sum(dim=1), dim=-1)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
