"""Linear layers on the CPU through oneDNN, with the GELU fused into the matmul (the BERT encoder's).

torch ships oneDNN's fused linear as ``torch.ops.mkldnn._linear_pointwise``, the op its own compiler (inductor)
emits for CPU linear layers. ``linear`` uses it for float32 and bfloat16 CPU tensors when it is present and
agrees with ``F.linear`` on a probe (``onednn_linear``) and no gradient is wanted, and ``F.linear`` everywhere
else (CUDA, float16, other builds, CPUs without AVX-512). Measured on this project's AMD EPYC machine
(docs/performance.md):

- bfloat16: torch's ``F.linear`` runs it on oneDNN already (the same results, bit for bit, 2-7% slower), but
  the GELU after it was a second pass over the output that cost a third of the matmul; fused, it is applied
  before the output is rounded, so the output is rounded once, not twice.
- float32: ``F.linear`` computes it with MKL's sgemm, 1.15-1.45x slower than oneDNN for BERT's shapes there.

oneDNN keeps a kernel and buffers per input shape: fed every batch width a corpus has, a float32 run's peak
memory grew from 684 to 1,025 MiB; with the widths padded to multiples of 16 (``dtypes.cpu_batch_width``, what
the bundled model's CPU batches get) it stayed at 578 MiB. NV-Embed's layers stay on ``F.linear``: through
this op they were no faster in either dtype, whole process, and took 25-200 MiB more.

The results agree with ``F.linear`` to the rounding of the accumulation order (tests/model/test_dense.py).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

Activation = Literal["none", "gelu"]

# oneDNN's names: the post-op and its algorithm ("none" is the exact erf GELU, not the tanh form)
_POST_OPS: dict[str, tuple[str, str]] = {"none": ("none", ""), "gelu": ("gelu", "none")}


def _activate(y: torch.Tensor, activation: Activation) -> torch.Tensor:
    return F.gelu(y) if activation == "gelu" else y  # the erf GELU


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: Activation) -> torch.Tensor:
    attr, algorithm = _POST_OPS[activation]
    out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)
    return out


@functools.cache
def onednn_linear(dtype: torch.dtype = torch.float32) -> bool:
    """Whether ``linear`` uses oneDNN's fused op for ``dtype``: the CPU has AVX-512 and the op agrees with
    ``F.linear`` (``onednn_agrees``). Without AVX-512 oneDNN has no bfloat16 kernels (the op raises) and its
    float32 ones ran at 0.72-0.96x of ``F.linear``'s for BERT's shapes even with the GELU as a second pass (an
    AVX2 AMD EPYC, bench/dense_linear.py), so ``F.linear`` is used there."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and onednn_agrees(dtype)


@functools.cache
def onednn_agrees(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch has oneDNN's fused linear for ``dtype`` and it computes what ``F.linear`` does
    (checked once per dtype, on a small probe per activation; any error or disagreement means no)."""
    built = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    if not (built and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    tolerance = {torch.bfloat16: (2**-6, 0.1), torch.float32: (1e-4, 1e-4)}.get(dtype)
    if tolerance is None:
        return False
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(5, 3, 24, generator=g), torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    try:
        with torch.inference_mode():
            xd, wd, bd = x.to(dtype), w.to(dtype), b.to(dtype)
            for activation in _POST_OPS:
                ours = _onednn(xd, wd, bd, activation).float()  # type: ignore[arg-type]
                theirs = _activate(F.linear(x, w, b), activation)  # type: ignore[arg-type]
                if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=tolerance[0], atol=tolerance[1]):
                    return False
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation = "none",
    *,
    onednn: bool | None = None,
) -> torch.Tensor:
    """activation(x @ weight.T + bias) for x (..., in), weight (out, in); x must have the weight's dtype.

    ``onednn`` None: oneDNN's fused op for float32 and bfloat16 CPU tensors when ``onednn_linear(x.dtype)`` and no
    gradient is wanted (the op has no backward: the embedders run under ``torch.inference_mode``); True or
    False forces the choice (tests compare the two)."""
    if onednn is None:
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        cpu = x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
        onednn = cpu and not wants_grad and onednn_linear(x.dtype)
    if onednn:
        return _onednn(x, weight, bias, activation)
    return _activate(F.linear(x, weight, bias), activation)


class Dense(nn.Linear):
    """``nn.Linear`` (same parameters, same checkpoint names) with an optional fused activation.

    The input is cast to the weight's dtype first: a model whose Dense weights are bfloat16 and whose norms
    and residual stream are float32 runs its matmuls in bfloat16 (``cast_dense``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: Activation = "none",
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.activation: Activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x.to(self.weight.dtype), self.weight, self.bias, self.activation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


def cast_dense(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast the weights and biases of every Dense layer in ``model`` to ``dtype`` (in place; the rest stays)."""
    for module in model.modules():
        if isinstance(module, Dense):
            module.to(dtype)
    return model
