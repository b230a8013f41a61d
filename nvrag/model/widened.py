"""bfloat16 weights computed in float32, for CPUs without bfloat16 arithmetic (``--dtype bfloat16`` there).

A CPU without AVX-512 BF16 or AMX has no bfloat16 dot product: PyTorch emulates one, and on an AVX2 AMD EPYC a
decoder layer of NV-Embed-v2's shapes ran 2.7x float32's time at a query's 32 rows and 7.1x at 512 in bfloat16
(bench/wide_linear.py, docs/performance.md "Without AVX-512"). Yet bfloat16 is what such a machine needs for a
7-8 B model: its float32 weights (NV-Embed-v2: 29 GiB) would not fit. So there the decoder layers' (and
NV-Embed's latent layer's) matmul weights stay bfloat16 (half the memory, the checkpoint's own values, mapped
from its file), and so does a decoder's token embedding table (the looked-up rows are widened), and everything
is computed in float32:
each weight is widened to float32 a block of rows at a time into a buffer that stays in cache, and multiplied
by float32's kernels. The norms, attention, residual stream and pooling are float32, as for ``--dtype float32``.

What it computes: the float32 model with each matmul weight rounded to bfloat16 (the tests compare against
exactly that), which is closer to float32 than bfloat16 arithmetic, whose activations are rounded too.

The same layer holds int8 weights with a float32 scale per output channel (``--dtype int8`` on a CPU without
int8 dot products, model/int8.py ``quantize(wide=True)``): widened the same way and each output scaled back,
the float32 model with each weight rounded to its row's int8 step, in half bfloat16's weight memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from nvrag.model.dense import Dense

NARROW = (torch.bfloat16, torch.float16)
# The widened block's bytes: a few MiB while the input has few rows (a query: the block is read from cache by
# the product right after it is written), more for large batches, where each block's product re-reads the whole
# input and a larger block amortises that. Measured on an AVX2 EPYC (bench/wide_linear.py).
FEW_ROWS = 64
SMALL_BLOCK_BYTES = 4 << 20
LARGE_BLOCK_BYTES = 64 << 20
BLOCK_ALIGN = 64  # block rows are a multiple of this (whole kernel panels)


def block_rows(rows: int, in_features: int, out_features: int) -> int:
    """How many weight rows are widened at a time for an input of ``rows`` rows."""
    budget = SMALL_BLOCK_BYTES if rows <= FEW_ROWS else LARGE_BLOCK_BYTES
    wanted = max(BLOCK_ALIGN, budget // (4 * in_features) // BLOCK_ALIGN * BLOCK_ALIGN)
    return min(wanted, out_features)


def wide_product(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ weight.T + bias`` in float32 for x (..., in) and a weight (out, in) of any float dtype, or int8
    with ``scale`` (1, out) per output channel (``(x @ weight.T) * scale + bias``): a narrow weight is widened a
    block of rows at a time (``block_rows``), never whole."""
    lead = x.shape[:-1]
    in_features, out_features = weight.shape[1], weight.shape[0]
    flat = x.reshape(-1, in_features).float()
    if weight.dtype == torch.float32:
        out = F.linear(flat, weight, None if bias is None else bias.float())
        return out.reshape(*lead, out_features)
    step = block_rows(flat.shape[0], in_features, out_features)
    out = torch.empty(flat.shape[0], out_features, dtype=torch.float32, device=x.device)
    block = torch.empty(step, in_features, dtype=torch.float32, device=x.device)
    for start in range(0, out_features, step):
        end = min(start + step, out_features)
        wide = block[: end - start]
        wide.copy_(weight[start:end])
        # into the output's columns in place (a strided slice: BLAS writes it through its leading dimension)
        torch.mm(flat, wide.t(), out=out[:, start:end])
    if scale is not None:
        out *= scale
    if bias is not None:
        out += bias.float()
    return out.reshape(*lead, out_features)


class WideLinear(nn.Module):
    """A Linear (or Dense: its fused GELU) layer whose weight is kept in bfloat16 (or float16), or given as int8
    rows with their float32 ``scale`` (out,), and multiplied in float32 (inference only). Inputs and outputs are
    float32."""

    def __init__(
        self, linear: nn.Linear, weight: torch.Tensor | None = None, scale: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # (out, in), narrow; a view of the checkpoint's mapped file stays one
        self.weight = linear.weight.detach() if weight is None else weight
        self.scale = None if scale is None else scale.reshape(1, -1).float()
        self.bias = None if linear.bias is None else linear.bias.detach().float()
        self.gelu = isinstance(linear, Dense) and linear.activation == "gelu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = wide_product(x, self.weight, self.bias, self.scale)
        return F.gelu(out) if self.gelu else out

    def extra_repr(self) -> str:
        kind = str(self.weight.dtype).removeprefix("torch.")
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind} weights, float32 products"


def widen(module: nn.Module) -> int:
    """Swap every Linear (and Dense) layer under ``module`` whose weight is bfloat16 or float16 for a WideLinear
    (the weight itself is kept, not copied); the number swapped."""
    done = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.weight.dtype in NARROW and child.weight.numel():
                setattr(parent, name, WideLinear(child))
                done += 1
    return done
