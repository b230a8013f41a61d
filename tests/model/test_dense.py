"""Linear layers through oneDNN (dense.py): the same values as float64 arithmetic done by hand, for each fused
activation and dtype, the same as F.linear; gradients still right; bfloat16 weights take float32 inputs."""

from __future__ import annotations

import math
import platform

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.dense import Dense, cast_dense, linear, onednn_agrees, onednn_linear


def exact(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, activation: str) -> torch.Tensor:
    """float64, the GELU written out with erf."""
    y = x.double() @ w.double().T + (0 if b is None else b.double())
    if activation == "gelu":
        gelu: torch.Tensor = y * 0.5 * (1 + torch.special.erf(y / math.sqrt(2)))
        return gelu
    return y


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available(),  # type: ignore[no-untyped-call]
    reason="oneDNN's fused linear is what x86 builds of torch ship",
)
def test_onednn_linear_is_found_on_an_x86_torch() -> None:
    # the speed of the CPU paths depends on it: a torch without it falls back silently, so say it here; on a
    # CPU without AVX-512 oneDNN has no bfloat16 kernels and slower float32 ones, and F.linear is used
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert onednn_agrees(torch.float32) and onednn_linear(torch.float32) == avx512
    assert onednn_agrees(torch.bfloat16) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert onednn_linear(torch.bfloat16) == (avx512 and onednn_agrees(torch.bfloat16))


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "F.linear"])
def test_linear_computes_the_activation_of_the_affine_map(activation: str, dtype: torch.dtype, onednn: bool) -> None:
    if onednn and not onednn_agrees(dtype):
        pytest.skip(f"this torch or CPU has no oneDNN fused linear in {dtype}")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 96, generator=g).to(dtype)  # a batch of sequences: (B, L, in)
    w = (torch.randn(80, 96, generator=g) / 10).to(dtype)
    b = torch.randn(80, generator=g).to(dtype)
    want = exact(x, w, b, activation)
    with torch.inference_mode():
        got = linear(x, w, b, activation, onednn=onednn)  # type: ignore[arg-type]
    assert got.shape == (2, 7, 80) and got.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    else:  # the inputs are exact bfloat16 values; what is left is the output's rounding (2^-8 relative)
        torch.testing.assert_close(got.double(), want, atol=1e-2, rtol=2**-7)


def test_the_fused_bfloat16_activation_rounds_once() -> None:
    if not onednn_agrees(torch.bfloat16):
        pytest.skip("this torch or CPU has no oneDNN fused linear in bfloat16")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(512, 64, generator=g).bfloat16()
    w = (torch.randn(256, 64, generator=g) / 8).bfloat16()
    want = exact(x, w, None, "gelu")
    with torch.inference_mode():
        fused = linear(x, w, None, "gelu", onednn=True).double()
        twice = F.gelu(F.linear(x, w)).double()  # rounded to bfloat16, GELU, rounded again
    assert (fused - want).abs().mean() < (twice - want).abs().mean()


def test_a_gradient_is_still_right() -> None:
    # oneDNN's op has no backward: when a gradient is wanted, F.linear computes
    layer = Dense(3, 2, bias=False, activation="none")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]))
    x = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]])
    layer(x).sum().backward()
    assert layer.weight.grad is not None
    assert layer.weight.grad.tolist() == [[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]]  # the column sums of x, per output


def test_bfloat16_dense_layers_take_float32_inputs_and_the_rest_stays() -> None:
    first_layer = Dense(8, 16, activation="gelu")
    model = nn.Sequential(first_layer, nn.LayerNorm(16), Dense(16, 4))
    cast_dense(model, torch.bfloat16)
    assert [p.dtype for p in model.parameters()] == [torch.bfloat16] * 2 + [torch.float32] * 2 + [torch.bfloat16] * 2
    x = torch.randn(5, 8)
    with torch.inference_mode():
        first = first_layer(x)
        assert first.dtype == torch.bfloat16
        want = exact(x.bfloat16(), first_layer.weight, first_layer.bias, "gelu")
        torch.testing.assert_close(first.double(), want, atol=1e-2, rtol=2**-7)
        assert model(x).dtype == torch.bfloat16
    assert "activation=gelu" in repr(first_layer)
