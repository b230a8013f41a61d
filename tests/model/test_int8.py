"""int8 weights on the CPU (model/int8.py, ``--dtype int8``): the layer's arithmetic against a product computed
by hand in integers, every matmul of a model converted, the vectors of each model family close to float32's,
the refusals (a GPU, a reranker), and the CLI recording it like any dtype. (Without int8 dot products the
weights are widened instead: tests/model/test_widened.py.)"""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nvrag.embedder import LoadOptions, dtypes, load_embedder
from nvrag.embedder.dtypes import INT8_DOT_FLAGS, choose_dtype, cpu_flags
from nvrag.errors import ConfigError
from nvrag.model import int8 as int8_module
from nvrag.model.dense import Dense
from nvrag.model.int8 import (
    Int8Linear,
    int8_supported,
    pack_int8,
    packed_int8_supported,
    quantize,
    quantize_rows,
    quantize_rows_unsigned,
    quantize_weight,
)
from nvrag.reranker import load_reranker
from tests.conftest import REPO
from tests.e2e.test_cli_e2e import nvrag

FIXTURES = REPO.parent / "shared" / "fixtures"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "hashing files and running shell commands " * 6, "short"]
VNNI = frozenset({"avx512f", "avx512_vnni"})

INT8_DOT_CPU = any(flag in cpu_flags() for flag in INT8_DOT_FLAGS)
NO_PACKED = "no exact oneDNN int8 matmul here (this PyTorch lacks it, or a CPU without VNNI saturates its sums)"
NO_INT8_DOT = "this CPU has no int8 dot products: its int8 layers are widened (model/widened.py), never packed"

pytestmark = pytest.mark.skipif(not int8_supported(), reason="this PyTorch has no int8 matmul on the CPU")


@pytest.fixture(autouse=True)
def int8_dot_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU without int8 dot products (VNNI, AMX) nvrag widens int8 weights to float32 (PyTorch's int8
    product is 9-25x slower than float32 there), not because that product differs: PyTorch's int8 kernels give
    the same integers on any x86 CPU. So in process these tests check the int8 dot-product path on such a CPU
    too, with VNNI added to the flags the choice reads; a CLI process reads the real ones (tested below)."""
    if not INT8_DOT_CPU:
        real = cpu_flags()
        monkeypatch.setattr(dtypes, "cpu_flags", lambda cpuinfo=None: real | {"avx_vnni"})


@pytest.mark.parametrize("kernel", ["oneDNN prepacked", "torch._int_mm"])
def test_the_layer_is_the_integer_product_scaled_back(kernel: str) -> None:
    if kernel == "oneDNN prepacked" and not packed_int8_supported():
        pytest.skip(NO_PACKED)
    g = torch.Generator().manual_seed(0)
    linear = Dense(24, 40, activation="gelu")
    with torch.no_grad():
        linear.weight.normal_(0, 0.1, generator=g)
        linear.bias.normal_(0, 0.1, generator=g)
    x = torch.randn(3, 5, 24, generator=g)
    layer = Int8Linear(linear)  # plain, as converted; a server packs it
    if kernel == "oneDNN prepacked":
        layer = layer.packed_copy()
    assert kernel in repr(layer)
    ours = layer(x)
    # by hand: each weight row and each input row scaled to 127, multiplied in integers, scaled back
    wq, ws = quantize_weight(linear.weight.detach())
    xq, xs = quantize_rows(x.reshape(-1, 24))
    integer = xq.long() @ wq.long().t()
    want = nn.functional.gelu(integer.double() * xs.double() * ws.double().t() + linear.bias.double())
    assert ours.shape == (3, 5, 40) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.reshape(-1, 40).double(), want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        exact = linear(x)
    assert float((ours - exact).norm() / exact.norm()) < 0.02  # int8's own error, not a bug's


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_are_quantised_to_the_nearest_step_of_their_own_range(dtype: torch.dtype) -> None:
    x = torch.randn(50, 300, generator=torch.Generator().manual_seed(1)) * torch.logspace(-3, 3, 50)[:, None]
    x[7] = 0  # an all-zero row goes to the zero point
    x = x.to(dtype)
    unsigned, scale = quantize_rows_unsigned(x)
    signed, same = quantize_rows(x)
    assert unsigned.dtype == torch.uint8 and signed.dtype == torch.int8 and torch.equal(scale, same)
    assert torch.equal(unsigned.long() - 128, signed.long())
    amax = x.double().abs().amax(dim=1, keepdim=True)
    torch.testing.assert_close(scale.double(), amax.clamp(min=1e-12) / 127, rtol=1e-6, atol=0)
    exact = x.double() * 127 / amax.clamp(min=1e-12)
    assert float((signed.double() - exact).abs().max()) <= 0.5 + 1e-4  # the nearest step, up to float32's rounding
    assert torch.equal(signed.abs().amax(dim=1)[[0, 8, 49]], torch.tensor([127, 127, 127], dtype=torch.int8))
    assert bool((unsigned[7] == 128).all())


@pytest.mark.skipif(not packed_int8_supported(), reason=NO_PACKED)
@pytest.mark.parametrize("rows", [1, 29, 300])
def test_the_prepacked_kernel_multiplies_exactly_at_any_rows(rows: int) -> None:
    # 4,096-wide rows: int32 accumulation, the zero point's compensation, the kernel oneDNN picks for each count
    g = torch.Generator().manual_seed(rows)
    linear = nn.Linear(4096, 96, bias=False).requires_grad_(False)
    linear.weight.normal_(generator=g)
    linear.weight[:, 0] = 50.0  # one large column: the other weights use few levels, its own +-127
    layer = Int8Linear(linear).packed_copy()
    x = torch.randn(rows, 4096, generator=g)
    wq, ws = quantize_weight(linear.weight)
    xq, xs = quantize_rows(x)
    want = (xq.long() @ wq.long().t()).double() * xs.double() * ws.double().t()
    torch.testing.assert_close(layer(x).double(), want, rtol=1e-6, atol=1e-6)


def test_every_matmul_of_a_model_is_converted() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(Dense(16, 8), nn.LayerNorm(8)))
    layers, _ = quantize(model)
    assert layers == 2 and not any(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 2
    assert isinstance(model[2][1], nn.LayerNorm)  # the rest stays


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("all-MiniLM-L6-v2", None),
        ("nvidia/NV-Embed-v2", FIXTURES / "nvembed-tiny"),
        ("auto", FIXTURES / "family" / "qwen3-embedding"),
        ("auto", FIXTURES / "family" / "llama-nemotron-embed"),
    ],
)
def test_each_family_in_int8_is_close_to_float32(name: str, folder: Path | None) -> None:
    from nvrag.app.settings import Settings
    from nvrag.app.wiring import choose

    model = choose(Settings(db="unused"), name, folder).name if name == "auto" else name
    exact = load_embedder(model, LoadOptions(dtype="float32", model_path=folder))
    int8 = load_embedder(model, LoadOptions(dtype="int8", model_path=folder))
    assert int8.info.compute_dtype == "int8" and int8.computes.startswith("int8 (as requested: int8 weights")
    documents = (exact.embed_documents(TEXTS) * int8.embed_documents(TEXTS)).sum(1)
    queries = (exact.embed_queries(TEXTS[:2]) * int8.embed_queries(TEXTS[:2])).sum(1)
    assert documents.min() > 0.99 and queries.min() > 0.99, (documents, queries)
    converted = int8.model.backbone if hasattr(int8.model, "backbone") else int8.model  # type: ignore[attr-defined]
    assert any(isinstance(m, Int8Linear) for m in converted.modules())
    assert not any(type(m) is nn.Linear or isinstance(m, Dense) for m in converted.modules())


def test_int8_is_refused_on_a_gpu_and_widened_without_int8_dot_products() -> None:
    with pytest.raises(ConfigError, match="--dtype int8 is for CPUs"):
        choose_dtype("int8", "cuda")
    widened = choose_dtype("int8", "cpu", flags=frozenset({"avx2", "avx512f"})).reason  # model/widened.py
    assert "the arithmetic in float32, as this CPU has no int8 dot products" in widened
    assert choose_dtype("int8", "cpu", flags=VNNI).reason.startswith("as requested: int8 weights and activations")
    with pytest.raises(ConfigError, match="rerankers compute in float32, bfloat16 or float16"):
        load_reranker(FIXTURES / "family" / "bert-cross-encoder", dtype="int8")


@pytest.mark.slow
def test_the_cli_embeds_and_indexes_in_int8_and_the_index_records_it(tmp_path: Path) -> None:
    """A CLI process reads the real CPU: int8 on its int8 dot products, or widened where it has none."""
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps(t) + "\n" for t in TEXTS), encoding="utf-8")
    out, exact = tmp_path / "int8.npy", tmp_path / "float32.npy"
    for dtype, path in (("int8", out), ("float32", exact)):
        run = nvrag("embed", "--input", str(texts), "-o", str(path), "--model", "all-MiniLM-L6-v2", "--dtype", dtype,
                    db=tmp_path / "db")  # fmt: skip
        assert run.returncode == 0, run.stderr
    assert (np.load(out) * np.load(exact)).sum(1).min() > 0.99
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text(TEXTS[1], encoding="utf-8")
    built = nvrag("index", str(corpus), "--index", "q", "--model", "all-MiniLM-L6-v2", "--dtype", "int8",
                  db=tmp_path / "db")  # fmt: skip
    assert built.returncode == 0, built.stderr
    said = " ".join(built.stderr.split())
    assert "computing in int8" in said
    assert ("as this CPU has no int8 dot products" in said) != INT8_DOT_CPU, said
    info = nvrag("info", "--json", db=tmp_path / "db")
    assert info.returncode == 0, info.stderr
    (index,) = [i["manifest"] for i in json.loads(info.stdout)["indexes"] if i["manifest"]["name"] == "q"]
    assert index["compute_dtype"] == "int8"


@pytest.mark.skipif(not packed_int8_supported(), reason=NO_PACKED)
def test_a_few_rows_quantise_on_one_thread_and_every_thread_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = Int8Linear(nn.Linear(1024, 512).requires_grad_(False)).packed_copy()
    small, large = (torch.randn(n, 1024, generator=torch.Generator().manual_seed(n)) for n in (29, 2048))
    calls: list[int] = []
    real = torch.set_num_threads

    def recording(n: int) -> None:
        calls.append(n)
        real(n)

    before = torch.get_num_threads()
    try:
        real(1)
        alone = layer(small), layer(large)
        real(2)
        monkeypatch.setattr(torch, "set_num_threads", recording)
        both = layer(small), layer(large)
        assert torch.get_num_threads() == 2
    finally:
        real(before)
    assert calls == [1, 2, 1, 2]  # the small input's quantising and scaling back, not the large one's
    assert all(torch.equal(a, b) for a, b in zip(alone, both, strict=True))  # the same arithmetic either way


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_a_weights_rows_are_quantised_to_their_nearest_step_in_row_blocks(dtype: torch.dtype) -> None:
    weight = torch.randn(600, 48, generator=torch.Generator().manual_seed(3)).to(dtype)  # several row blocks
    weight[300] = 0
    blocks, scale = quantize_weight(weight)
    amax = weight.double().abs().amax(dim=1, keepdim=True)
    exact = weight.double() * 127 / amax.clamp(min=1e-12)  # the step each element should round to, in float64
    assert blocks.dtype == torch.int8 and scale.shape == (600, 1)
    assert torch.allclose(scale.double(), amax.clamp(min=1e-12) / 127, rtol=1e-6)
    assert torch.equal(blocks[300], torch.zeros(48, dtype=torch.int8)) and blocks.abs().amax(dim=1)[:300].eq(127).all()
    off = (blocks.double() - exact).abs()
    assert off.max() <= 0.5 + 1e-5  # the nearest step, up to the float32 product's rounding at a tie
    different = blocks.double() != exact.round()
    assert ((exact - exact.floor() - 0.5).abs()[different] < 1e-5).all()  # only at (near-)ties


needs_packed = pytest.mark.skipif(not packed_int8_supported(), reason=NO_PACKED)


def int8_model() -> nn.Module:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Sequential(Dense(96, 40, activation="gelu")))
    quantize(model)
    return model


@needs_packed
def test_a_server_packs_each_plain_layer_and_the_products_stay_the_same() -> None:
    """Converted layers are plain (a one-shot command's: nothing set up); a server swaps each for its packed
    copy, which computes the same integer product (only the float scaling's order differs)."""
    model = int8_model()
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 2 and not any(m.packed for m in layers)
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        plain = model(x)
    assert pack_int8(model)[0] == 2
    assert all(m.packed for m in model.modules() if isinstance(m, Int8Linear))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), plain, rtol=1e-5, atol=1e-6)
    assert pack_int8(model) == (0, 0.0)  # nothing left to pack


@needs_packed
def test_int8_packing_stops_when_told_and_waits_while_requests_run() -> None:
    stop = threading.Event()
    stop.set()
    model = int8_model()
    assert pack_int8(model, stop=stop)[0] == 0
    assert not any(m.packed for m in model.modules() if isinstance(m, Int8Linear))
    looks = 0

    def busy() -> bool:  # requests running for the first 3 looks, then idle
        nonlocal looks
        looks += 1
        return looks <= 3

    assert pack_int8(model, busy=busy)[0] == 2 and looks == 3 + 2
    assert pack_int8(int8_model(), busy=lambda: True, max_wait=0.001)[0] == 2  # a busy server still gets packed


def status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/self/status")


@needs_packed
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset the peak")
def test_packing_frees_each_plain_weight_as_it_goes() -> None:
    """The plain int8 weights are the process's own memory (not pages of the checkpoint's file): each must be
    freed once its packed copy took its place, or a server holds both copies at once (NV-Embed-v2's real shape
    peaked at 14 GiB instead of 8 while packing). 12 weights of 16 MiB: the peak while packing stays within a
    few of them (measured 24 MiB over; 200 MiB with every replaced layer still referenced)."""
    model = nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(12)]).requires_grad_(False)
    quantize(model)
    gc.collect()
    before = status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    assert pack_int8(model)[0] == 12
    assert status_bytes("VmHWM") - before < 6 * 16 * 2**20


def test_without_onednns_int8_operators_layers_stay_plain_and_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8_module, "packed_int8_supported", lambda: False)
    model = int8_model()
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        before = model(x)
        assert pack_int8(model) == (0, 0.0)
        assert torch.equal(model(x), before)


@needs_packed
@pytest.mark.parametrize(
    ("name", "folder", "linears"),
    [
        ("all-MiniLM-L6-v2", None, 36),
        ("nvidia/NV-Embed-v2", FIXTURES / "nvembed-tiny", None),
        ("Qwen/Qwen3-Embedding-0.6B", FIXTURES / "family" / "qwen3-embedding", None),
    ],
)
def test_an_int8_model_prepared_for_serving_packs_its_layers_and_embeds_the_same(
    name: str, folder: Path | None, linears: int | None
) -> None:
    embedder = load_embedder(name, LoadOptions(dtype="int8", model_path=folder))
    documents, queries = embedder.embed_documents(TEXTS), embedder.embed_queries(TEXTS[:2])
    converted = embedder.model.backbone if hasattr(embedder.model, "backbone") else embedder.model  # type: ignore[attr-defined]
    count = sum(isinstance(m, Int8Linear) for m in converted.modules())
    assert linears is None or count == linears
    line = embedder.prepare_for_serving()
    assert line is not None and f": {count} int8 matmul weights" in line and "prepacked" in line, line
    assert all(m.packed for m in converted.modules() if isinstance(m, Int8Linear))
    # each layer's integer product is the same; the float scaling's order differs, and a last-bit change moves
    # some of the next layer's inputs across a rounding step: close, not bit for bit
    again = (embedder.embed_documents(TEXTS) * documents).sum(1), (embedder.embed_queries(TEXTS[:2]) * queries).sum(1)
    assert min(again[0].min(), again[1].min()) > 0.999, again
