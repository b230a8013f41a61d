"""bfloat16 weights computed in float32 (model/widened.py), what ``--dtype bfloat16`` means on a CPU without
bfloat16 arithmetic: the layer against the float32 product of its rounded weight; every model kind against its
float32 model with the same weights rounded to bfloat16; the weights kept as the checkpoint's own mapped bytes
(no float32 copy of the layers: the point of it for a 7-8 B model), also for int8's float32 rest; what the
dtype choice and the memory estimate say."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from nvrag.embedder import dtypes
from nvrag.embedder.decoder import DecoderEmbedder
from nvrag.embedder.dtypes import choose_dtype
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.embedder.nvembed import NVEmbedEmbedder
from nvrag.embedder.registry import weight_bytes
from nvrag.embedder.weights import loaded_weight_bytes
from nvrag.model import widened
from nvrag.model.dense import Dense
from nvrag.model.int8 import Int8Linear, quantize_weight
from nvrag.model.loading import STORED, STORED_WIDE, load_model
from nvrag.model.prepack import file_backed, file_mappings
from nvrag.model.widened import WideLinear, block_rows, widen
from nvrag.reranker import load_reranker
from tests.conftest import NVEMBED_TINY, REPO

FAMILY = REPO.parent / "shared" / "fixtures" / "family"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "hashing files and running shell commands " * 6, "short"]
NO_BF16 = frozenset({"avx2", "fma"})  # an AVX2 CPU's flags: no bfloat16 arithmetic
NATIVE = frozenset({"avx512f", "avx512_bf16"})


@pytest.fixture
def no_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags the dtype choice reads say this CPU has no bfloat16 arithmetic (true of an AVX2 machine; on an
    AVX-512 BF16 one this shows nvrag what such a CPU would look like). Only a speed policy reads them: the
    arithmetic checked below is computed for real either way."""
    monkeypatch.setattr(dtypes, "cpu_flags", lambda cpuinfo=None: NO_BF16)


def rounded_copy(module: nn.Module, chosen: Callable[[str, nn.Linear], bool], bias: bool = False) -> None:
    """Round the weights (and with ``bias`` the biases) of the chosen Linear layers, and a decoder's token
    embeddings, to bfloat16 and back, in place: the float32 model a widened one must compute exactly."""
    with torch.no_grad():
        for name, layer in module.named_modules():
            if isinstance(layer, nn.Embedding) and name.endswith("backbone.embed"):
                layer.weight.copy_(layer.weight.bfloat16().float())
            if isinstance(layer, nn.Linear) and chosen(name, layer):
                layer.weight.copy_(layer.weight.bfloat16().float())
                if bias and layer.bias is not None:
                    layer.bias.copy_(layer.bias.bfloat16().float())


def in_layers(name: str, layer: nn.Linear) -> bool:
    return name.startswith("backbone.layers.")


@pytest.mark.parametrize("rows", [3, 200])
@pytest.mark.parametrize("gelu", [False, True])
def test_the_layer_is_the_float32_product_of_its_bfloat16_weight(
    rows: int, gelu: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # blocks of 64 weight rows, so 200 output rows take four blocks, the last one short
    monkeypatch.setattr(widened, "SMALL_BLOCK_BYTES", 64 * 4 * 96)
    monkeypatch.setattr(widened, "LARGE_BLOCK_BYTES", 64 * 4 * 96)
    g = torch.Generator().manual_seed(1)
    layer = Dense(96, 200, activation="gelu" if gelu else "none")
    with torch.no_grad():
        layer.weight.copy_(torch.randn(200, 96, generator=g))
        layer.bias.copy_(torch.randn(200, generator=g))
    layer.to(torch.bfloat16)
    wide = WideLinear(layer)
    assert wide.weight.data_ptr() == layer.weight.data_ptr()  # kept, not copied
    x = torch.randn(1, rows, 96, generator=g)
    got = wide(x)
    want = F.linear(x, layer.weight.float(), layer.bias.float())
    want = F.gelu(want) if gelu else want
    assert got.dtype == torch.float32 and got.shape == (1, rows, 200)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    emulated = layer(x.bfloat16()).float()  # bfloat16 arithmetic rounds the inputs and the output too
    assert (emulated - want).abs().max() > 10 * (got - want).abs().max()


def test_block_rows_follow_the_input_rows_and_the_weight_width() -> None:
    assert block_rows(32, 4096, 14336) == 256  # 4 MiB of float32: 256 rows of 4,096
    assert block_rows(32, 14336, 4096) == 64  # 73 rows of 14,336, down to a whole 64
    assert block_rows(512, 4096, 14336) == 4096  # 64 MiB for a large batch
    assert block_rows(512, 14336, 4096) == 1152
    assert block_rows(32, 64, 100) == 100  # never past the weight's rows
    assert block_rows(32, 10**7, 500) == 64  # at least one panel


def test_widen_swaps_only_narrow_layers() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8).bfloat16(), Dense(8, 8, activation="gelu").bfloat16())
    assert widen(model) == 2
    assert [type(m).__name__ for m in model] == ["Linear", "WideLinear", "WideLinear"]
    assert model[2].gelu and not model[1].gelu


@pytest.mark.usefixtures("no_bf16_cpu")
def test_nvembed_in_bfloat16_is_float32_with_its_layer_weights_rounded() -> None:
    half = NVEmbedEmbedder(NVEMBED_TINY, dtype="bfloat16")
    assert half.info.compute_dtype == "bfloat16"  # what an index records: its vectors are the bfloat16 weights'
    layers = [m for m in half.model.backbone.modules() if isinstance(m, WideLinear)]
    assert layers and {m.weight.dtype for m in layers} == {torch.bfloat16}
    assert half.model.pool.released  # the projections went once folded, never widened whole
    assert half.model.backbone.embed.weight.dtype == torch.bfloat16  # widened as it is looked up
    assert half.model.dtype == torch.float32 and half.model.backbone.norm.weight.dtype == torch.float32
    assert not [m for m in half.model.backbone.modules() if type(m) is nn.Linear]  # every matmul widened
    assert {type(m).__name__ for m in (half.model.pool.ff_in, half.model.pool.ff_out)} == {"WideLinear"}
    exact = NVEmbedEmbedder(NVEMBED_TINY, dtype="float32")
    model = load_model(NVEMBED_TINY, dtype=torch.float32)  # the projections kept, to fold again once rounded
    rounded_copy(model, lambda name, layer: in_layers(name, layer) or name.startswith("pool."))
    exact._model = model.prepare()  # the folded latent matrices, from the rounded projections
    got, want = half.embed_documents(TEXTS), exact.embed_documents(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    plain = NVEmbedEmbedder(NVEMBED_TINY, dtype="float32").embed_documents(TEXTS)
    assert np.abs(got - plain).max() > 1e-4  # the rounding is real


@pytest.mark.usefixtures("no_bf16_cpu")
@pytest.mark.parametrize("style", ["qwen3-embedding", "e5-mistral"])
def test_decoder_embedders_in_bfloat16_are_float32_with_their_layer_weights_rounded(style: str) -> None:
    half = DecoderEmbedder(FAMILY / style, dtype="bfloat16")
    assert any(isinstance(m, WideLinear) for m in half.model.modules())
    exact = DecoderEmbedder(FAMILY / style, dtype="float32")
    rounded_copy(exact.model, in_layers)
    np.testing.assert_allclose(half.embed_documents(TEXTS), exact.embed_documents(TEXTS), atol=1e-6, rtol=0)


@pytest.mark.usefixtures("no_bf16_cpu")
def test_minilm_in_bfloat16_is_float32_with_its_dense_weights_rounded() -> None:
    half, exact = MiniLMEmbedder(dtype="bfloat16"), MiniLMEmbedder(dtype="float32")
    assert half.info.compute_dtype == "bfloat16"
    assert all(not isinstance(m, Dense) for m in half.model.modules())  # every Dense widened
    rounded_copy(exact.model, lambda name, layer: isinstance(layer, Dense), bias=True)  # cast_dense rounds biases
    np.testing.assert_allclose(half.embed_documents(TEXTS), exact.embed_documents(TEXTS), atol=1e-6, rtol=0)


@pytest.mark.usefixtures("no_bf16_cpu")
@pytest.mark.parametrize("style", ["qwen3-reranker", "bert-cross-encoder"])
def test_rerankers_in_bfloat16_are_float32_with_their_weights_rounded(style: str) -> None:
    half, exact = load_reranker(FAMILY / style, dtype="bfloat16"), load_reranker(FAMILY / style, dtype="float32")
    model = half.model  # type: ignore[attr-defined]
    assert any(isinstance(m, WideLinear) for m in model.modules())
    if style == "bert-cross-encoder":
        # every matmul of it is cast to bfloat16, biases too (cast_dense, and the pooler and classifier)
        rounded_copy(exact.model, lambda name, layer: True, bias=True)  # type: ignore[attr-defined]
    else:
        rounded_copy(exact.model, in_layers)  # type: ignore[attr-defined]
    query, documents = "what does the fox do", TEXTS
    np.testing.assert_allclose(half.score(query, documents), exact.score(query, documents), atol=1e-5, rtol=0)


def on_int8_steps(module: nn.Module, chosen: Callable[[str, nn.Linear], bool]) -> None:
    """Put the weights of the chosen Linear layers on their rows' int8 steps (``quantize_weight``), in place:
    the float32 model an int8 one widened must compute, up to the order of the scaling."""
    with torch.no_grad():
        for name, layer in module.named_modules():
            if isinstance(layer, nn.Linear) and chosen(name, layer):
                weight, scale = quantize_weight(layer.weight.detach())
                layer.weight.copy_(weight.float() * scale)


@pytest.mark.parametrize("gelu", [False, True])
def test_an_int8_layer_is_the_float32_product_of_its_rows_scaled_back(
    gelu: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(widened, "SMALL_BLOCK_BYTES", 64 * 4 * 96)  # four blocks, the last one short
    g = torch.Generator().manual_seed(2)
    layer = Dense(96, 200, activation="gelu" if gelu else "none").requires_grad_(False)
    layer.weight.normal_(0, 0.1, generator=g)
    layer.bias.normal_(0, 0.1, generator=g)
    weight, scale = quantize_weight(layer.weight)
    wide = WideLinear(layer, weight, scale)
    assert wide.weight.dtype == torch.int8 and "int8 weights, float32 products" in repr(wide)
    x = torch.randn(2, 7, 96, generator=g)
    want = (x.double() @ weight.double().t()) * scale.double().t() + layer.bias.double()
    want = F.gelu(want) if gelu else want
    torch.testing.assert_close(wide(x).double(), want, atol=2e-5, rtol=1e-5)


@pytest.mark.usefixtures("no_bf16_cpu")  # an AVX2 CPU's flags: no int8 dot products either
@pytest.mark.parametrize("style", ["nvembed", "qwen3-embedding", "minilm"])
def test_int8_without_int8_dot_products_is_float32_with_its_weights_on_their_int8_steps(style: str) -> None:
    """``--dtype int8`` where the CPU has no int8 dot products: the same int8 weights and scales, widened; the
    float32 model whose converted weights are put on their int8 steps, exactly (no input is quantised)."""
    # the token embeddings and NV-Embed's latent layer are bfloat16, widened (the bundled model keeps its own)
    if style == "nvembed":
        half, exact = (NVEmbedEmbedder(NVEMBED_TINY, dtype=d) for d in ("int8", "float32"))
        model = load_model(NVEMBED_TINY, dtype=torch.float32)  # the projections kept, to fold again once rounded
        on_int8_steps(model, in_layers)
        rounded_copy(model, lambda name, layer: name.startswith("pool."))
        exact._model = model.prepare()
    elif style == "minilm":
        half, exact = MiniLMEmbedder(dtype="int8"), MiniLMEmbedder(dtype="float32")  # type: ignore[assignment]
        on_int8_steps(exact.model, lambda name, layer: True)
    else:
        half, exact = (DecoderEmbedder(FAMILY / style, dtype=d) for d in ("int8", "float32"))  # type: ignore[assignment]
        on_int8_steps(exact.model, in_layers)
        rounded_copy(exact.model, lambda name, layer: False)
    assert half.info.compute_dtype == "int8"
    converted = half.model.backbone if hasattr(half.model, "backbone") else half.model
    layers = [m for m in converted.modules() if isinstance(m, WideLinear)]
    assert layers and {m.weight.dtype for m in layers} == {torch.int8}
    # nothing on the int8 dot products, and no float matmul left unwidened (NV-Embed's folded projections: gone)
    plain = [m for m in half.model.modules() if type(m) is nn.Linear and m.weight.numel()]
    assert not plain and not [m for m in half.model.modules() if isinstance(m, Int8Linear)]
    got, want = half.embed_documents(TEXTS), exact.embed_documents(TEXTS)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    np.testing.assert_allclose(half.embed_queries(TEXTS[:2]), exact.embed_queries(TEXTS[:2]), atol=2e-6, rtol=0)


def bfloat16_copy(folder: Path, to: Path) -> Path:
    """The checkpoint in ``folder`` with every tensor stored in bfloat16 (as NV-Embed-v2 ships), elsewhere."""
    to.mkdir()
    for item in folder.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, to / item.name)
            continue
        with safe_open(str(item), framework="pt") as f:
            tensors = {k: f.get_tensor(k).bfloat16() for k in f.keys()}  # noqa: SIM118 - not a mapping
        save_file(tensors, str(to / item.name), metadata={"format": "pt"})
    return to


@pytest.mark.usefixtures("no_bf16_cpu")
def test_layer_weights_stay_the_checkpoints_mapped_bytes(tmp_path: Path) -> None:
    """No float32 copy of a decoder's layers is ever made where the rest computes in float32: the widened
    bfloat16 model keeps the mapped shards' tensors, and int8's float32 rest (a VNNI CPU without bfloat16)
    quantises from them (NV-Embed-v2's layers in float32 would be 26 GiB)."""
    folder = bfloat16_copy(NVEMBED_TINY, tmp_path / "bf16")
    half = NVEmbedEmbedder(folder, dtype="bfloat16")
    model = half.model
    maps = file_mappings()
    layers = [m for m in model.modules() if isinstance(m, WideLinear)]  # the latent layer's feed-forward too
    assert len(layers) == 7 * model.config.num_hidden_layers + 2
    assert all(file_backed(m.weight, maps) for m in layers)
    assert file_backed(model.backbone.embed.weight, maps)  # the token embeddings too (NV-Embed-v2's: 250 MiB)
    as_stored = load_model(folder, dtype=torch.float32, resident_weights=False, matmul_dtype=STORED)
    maps = file_mappings()
    weights = [p for n, p in as_stored.named_parameters() if n.startswith("backbone.layers.") and p.dim() == 2]
    assert weights and all(w.dtype == torch.bfloat16 and file_backed(w, maps) for w in weights)
    assert as_stored.backbone.embed.weight.dtype == torch.float32  # the rest in its compute dtype
    # int8 where the rest computes in float32: the token embeddings and the latent layer's weights mapped too
    stored_wide = load_model(folder, dtype=torch.float32, resident_weights=False, matmul_dtype=STORED_WIDE)
    maps = file_mappings()
    narrow = [stored_wide.backbone.embed.weight, stored_wide.pool.ff_in.weight, stored_wide.pool.ff_out.weight]
    assert all(w.dtype == torch.bfloat16 and file_backed(w, maps) for w in narrow)
    assert stored_wide.backbone.norm.weight.dtype == torch.float32


def test_the_choice_says_what_bfloat16_computes_in() -> None:
    widened_reason = choose_dtype("bfloat16", "cpu", flags=NO_BF16).reason
    assert "matmul weights in bfloat16, the arithmetic in float32" in widened_reason
    assert choose_dtype("bfloat16", "cpu", flags=NATIVE).reason == "as requested"
    assert choose_dtype("bfloat16", "cuda", flags=NO_BF16).reason == "as requested"
    int8 = choose_dtype("int8", "cpu", flags=NO_BF16).reason
    assert "int8 weights" in int8 and "the arithmetic in float32, as this CPU has no int8 dot products" in int8
    gib = 2**30
    by_memory = choose_dtype(None, "cpu", flags=NO_BF16, memory=24 * gib, fp32_bytes=29 * gib)
    assert by_memory.name == "bfloat16" and by_memory.note and "arithmetic in float32" in by_memory.note


def test_the_memory_estimate_counts_a_widened_models_rest_in_float32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors = {
        "model.layers.0.mlp.up_proj.weight": torch.zeros(8, 4),  # a layer's matmul weight: 32 parameters
        "model.layers.0.input_layernorm.weight": torch.zeros(4),  # the rest: 4 + 40 parameters
        "model.embed_tokens.weight": torch.zeros(10, 4),
        # NV-Embed's latent feed-forward: bfloat16 when widened (6 parameters), in the rest's dtype for int8
        "latent_attention_model.cross_attend_blocks.1.fn.net.0.weight": torch.zeros(3, 2),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    # widened: the layer, latent and embedding weights (32 + 6 + 40) in bfloat16, the norm (4) in float32
    assert loaded_weight_bytes(tmp_path, "bfloat16") == 2 * (32 + 6 + 44)
    assert loaded_weight_bytes(tmp_path, "bfloat16", "float32") == 2 * (32 + 6 + 40) + 4 * 4
    # int8: the layer's weight a byte each (and 12 bytes a row), the latent and embedding weights in bfloat16
    assert loaded_weight_bytes(tmp_path, "int8", "float32") == 32 + 8 * 12 + 2 * (6 + 40) + 4 * 4
    monkeypatch.setattr(dtypes, "cpu_flags", lambda cpuinfo=None: NO_BF16)
    assert weight_bytes(tmp_path, "bfloat16", "cpu") == 2 * (32 + 6 + 40) + 4 * 4
    assert weight_bytes(tmp_path, "bfloat16", "cuda") == 2 * (32 + 6 + 44)
    monkeypatch.setattr(dtypes, "cpu_flags", lambda cpuinfo=None: NATIVE)
    assert weight_bytes(tmp_path, "bfloat16", "cpu") == 2 * (32 + 6 + 44)
