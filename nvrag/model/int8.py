"""int8 weights on the CPU (``--dtype int8``): each Linear layer's weight as int8 with one scale per output
channel, its input quantised to int8 per row as it arrives, the product on the CPU's int8 dot products
(``torch._int_mm``: VNNI/AMX through oneDNN), then scaled back.

Why this form: per-output-channel weight scales keep each output's error relative to its own range; per-row
(per-token) activation scales follow each token's range, so one token's large activations do not crush the
rest. Weight-only int8 (``torch._weight_int8pack_mm``) was measured 2-3x slower than bfloat16 on this project's
CPU and dequantising the weight every pass costs a full weight read in float, so the activations are quantised
too. Memory: a quarter of float32, half of bfloat16 (the float weights are released as each layer is
converted; a weight mapped from the checkpoint's file has its pages dropped, as prepack.py does).

The rest of the model (embeddings, norms, attention, pooling) keeps the dtype it was loaded in.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from nvrag.heap import trim_heap
from nvrag.model.dense import Dense
from nvrag.model.prepack import drop_pages, file_backed, file_mappings

TRIM_EVERY = 7  # layers converted between two trims (a decoder layer's matmuls; a trim takes ~0.05 s)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 rows, float32 scales (rows, 1)): each row of ``x`` (2-D) scaled so its largest magnitude is 127."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 127.0
    return torch.round(x.float() / scale).clamp_(-127, 127).to(torch.int8), scale


class Int8Linear(nn.Module):
    """A Linear (or Dense: its fused GELU, model/dense.py) layer with int8 weights (inference only). Outputs
    come in the input's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            weight = linear.weight.detach()
            quantised, scale = quantize_rows(weight)  # one scale per output channel: the weight's rows
            self.weight_t = quantised.t().contiguous()  # (in, out): torch._int_mm's right operand
            self.scale = scale.reshape(1, -1)  # (1, out) float32
            self.bias = None if linear.bias is None else linear.bias.detach().float()
        self.gelu = isinstance(linear, Dense) and linear.activation == "gelu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows, row_scale = quantize_rows(x.reshape(-1, self.in_features))
        # in place after the one float32 copy: a 2,048-row pass of NV-Embed's MLP holds 117 MB per temporary
        out = torch._int_mm(rows, self.weight_t).float().mul_(row_scale).mul_(self.scale)
        if self.bias is not None:
            out += self.bias
        if self.gelu:
            out = nn.functional.gelu(out)
        return out.to(x.dtype).view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def int8_supported() -> bool:
    """This PyTorch multiplies int8 matrices on the CPU (checked on a small product)."""
    try:
        a = torch.ones(2, 8, dtype=torch.int8)
        return bool(torch.equal(torch._int_mm(a, a.t().contiguous()), torch.full((2, 2), 8, dtype=torch.int32)))
    except (RuntimeError, AttributeError):
        return False


def quantize(module: nn.Module) -> tuple[int, float]:
    """Swap every Linear (and Dense) layer under ``module`` for an Int8Linear, one at a time (each layer's float
    weight is released once its int8 copy is in place); (layers converted, seconds)."""
    start = time.perf_counter()
    maps = file_mappings()
    done = 0
    with torch.inference_mode():
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child.weight.device.type == "cpu":
                    mapped = file_backed(child.weight, maps)
                    setattr(parent, name, Int8Linear(child))
                    if mapped:
                        drop_pages(child.weight)
                    done += 1
                    if done % TRIM_EVERY == 0:
                        trim_heap()  # the conversion's freed temporaries, before they add up
    trim_heap()
    return done, time.perf_counter() - start
