"""int8 weights on the CPU (``--dtype int8``): each Linear layer's weight as int8 with one scale per output
channel, its input quantised to 8 bits per row as it arrives, the product on the CPU's int8 dot products, then
scaled back.

Why this form: per-output-channel weight scales keep each output's error relative to its own range; per-row
(per-token) activation scales follow each token's range, so one token's large activations do not crush the
rest. Weight-only int8 (``torch._weight_int8pack_mm``) was measured 2-3x slower than bfloat16 on this project's
CPU and dequantising the weight every pass costs a full weight read in float, so the activations are quantised
too. Memory: a quarter of float32, half of bfloat16 (the float weights are released as each layer is
converted; a weight mapped from the checkpoint's file has its pages dropped, as prepack.py does).

The kernels: a layer is converted plain (the int8 weight as quantised, (out, in), multiplied by ``torch._int_mm``,
which sets nothing up): what a one-shot command runs. A server, once ready, swaps each layer in the background for
its packed copy (``pack_int8``): the weight reordered once into oneDNN's blocked layout (``torch.ops.onednn``'s
``qlinear_prepack`` / ``qlinear_pointwise``, what PyTorch's own x86 quantisation compiles to), 2.0-2.6x faster at
a query's 32 rows, 1.1-1.2x at 512 and level at an NV-Embed document batch's 2,048, where ``torch._int_mm``'s
reorder on every call is paid back. The reorder costs 17-18 s at NV-Embed-v2's real shape on 2 cores, which a
one-shot command no longer pays: ``nvrag embed`` of one query 30.2 -> 20.6 s (docs/performance.md, "int8 on the
CPU"). x86's int8 dot product multiplies unsigned by signed bytes, so for the packed kernel each input row goes in
as ``round(x / scale) + 128`` with zero point 128 and oneDNN subtracts the zero point's share exactly: the integer
product is the one ``torch._int_mm`` computes on the same signed values. Where PyTorch lacks those operators,
layers stay plain.

The rest of the model (embeddings, norms, attention, pooling) keeps the dtype it was loaded in.

A CPU without int8 dot products (an AVX2 one: PyTorch's int8 product ran 12-24x slower than float32 there) gets
the same int8 weights and scales in a WideLinear instead (``quantize(wide=True)``, model/widened.py): widened to
float32 (for few rows by the compiled kernel, a panel at a time), the inputs not quantised: half bfloat16's
weight memory, and at a query's rows as fast as widened bfloat16 or faster (fewer bytes to stream).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from functools import cache

import torch
from torch import nn

from nvrag.heap import trim_heap
from nvrag.model.dense import Dense
from nvrag.model.prepack import MAX_WAIT_SECONDS, drop_pages, file_backed, file_mappings, swap_each
from nvrag.model.widened import WideLinear

TRIM_EVERY = 7  # layers converted between two trims (a decoder layer's matmuls; a trim takes ~0.05 s)


ZERO_POINT = 128  # the inputs' zero point: signed rows in [-127, 127] go to the kernel as unsigned bytes
# Up to this many elements (the larger of a layer's input and output, on 2 threads), quantising the input and
# scaling the product back run on one thread: a server's sleeping compute threads (OMP_WAIT_POLICY=PASSIVE) take
# longer to wake than the work takes. Measured on NV-Embed-v2's shapes (docs/performance.md): 8-29 rows 6-35%
# faster per layer that way, 64-256 rows of 14,336 level or slower.
SERIAL_ELEMENTS = 1 << 19
WEIGHT_ROWS = 256  # a weight is quantised this many rows at a time
ROUNDING_SHIFT = torch.tensor(ZERO_POINT + 0.5)  # added before the truncating cast to uint8: it rounds


def quantize_rows_unsigned(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 rows, float32 scales (rows, 1)): ``round(x * 127 / amax) + 128`` (ties rounded up), each row's
    largest magnitude ``amax`` going to 1 or 255 and zero to 128. Two passes over the rows (the float32 product,
    then the truncating cast: +128.5 makes it round), because each extra pass over a 2,048-row input costs as
    much as a tenth of its matmul."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12)
    shifted = torch.addcmul(ROUNDING_SHIFT, x, 127.0 / amax)  # float32, in [1.5, 255.5]
    return shifted.to(torch.uint8), amax.div_(127.0)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 rows, float32 scales (rows, 1)): each row of ``x`` (2-D) scaled so its largest magnitude is 127;
    ``quantize_rows_unsigned`` without the zero point: flipping the top bit of ``u`` in [1, 255] is ``u - 128``
    in two's complement (one pass over bytes)."""
    unsigned, scale = quantize_rows_unsigned(x)
    return unsigned.bitwise_xor_(ZERO_POINT).view(torch.int8), scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 rows, float32 scales (rows, 1)) of a weight: each row scaled so its largest magnitude is 127 and
    rounded to the nearest step (ties to even), WEIGHT_ROWS rows at a time (its temporaries stay in cache). One
    float32 pass instead of the activations' unsigned form and its two casts: 2-3x faster on NV-Embed's
    [14,336 x 4,096] matrices (docs/performance.md), and as exact (the float32 product rounded once)."""
    quantised = torch.empty(weight.shape, dtype=torch.int8)
    scale = torch.empty(weight.shape[0], 1, dtype=torch.float32)
    for start in range(0, weight.shape[0], WEIGHT_ROWS):
        block = weight[start : start + WEIGHT_ROWS]
        amax = block.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12)
        quantised[start : start + WEIGHT_ROWS] = (block * (127.0 / amax)).round_()  # integers: the cast is exact
        scale[start : start + WEIGHT_ROWS] = amax.div_(127.0)
    return quantised, scale


def serial_limit(threads: int) -> int:
    """Elements up to which a layer's elementwise work runs on one thread: SERIAL_ELEMENTS on 2 threads, about
    half on many (waking more threads costs about as much, while their share of the work shrinks); 0 where the
    thread count cannot change per call (PyTorch's native thread pool fixes it at the first parallel work)."""
    return SERIAL_ELEMENTS * threads // (2 * (threads - 1)) if threads > 1 and openmp() else 0


@cache
def openmp() -> bool:
    """PyTorch's intra-op threads are OpenMP's, whose thread count a thread may set for its own next regions."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


@cache
def packed_int8_supported() -> bool:
    """This PyTorch has oneDNN's prepacked int8 matmul and it computes the integer product exactly (checked on a
    small one against int64 arithmetic)."""
    ops = getattr(torch.ops, "onednn", None)
    if ops is None or not (hasattr(ops, "qlinear_prepack") and hasattr(ops, "qlinear_pointwise")):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        w = torch.randint(-127, 128, (24, 40), dtype=torch.int8, generator=g)
        x = torch.randint(0, 256, (3, 40), dtype=torch.uint8, generator=g)
        got = _packed_product(
            x, torch.ops.onednn.qlinear_prepack(w, None), torch.ones(24), torch.zeros(24, dtype=torch.long)
        )
        want = (x.long() - ZERO_POINT) @ w.long().t()
        return bool(torch.equal(got, want.float()))
    except (RuntimeError, AttributeError, TypeError):
        return False


def _packed_product(rows: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """float32 ``(rows - 128) @ weight.T * scale`` through oneDNN (the bias and the rows' scales are not in it)."""
    out: torch.Tensor = torch.ops.onednn.qlinear_pointwise(
        rows, 1.0, ZERO_POINT, packed, scale, zeros, None, 1.0, 0, torch.float32, "none", [], ""
    )
    return out


class Int8Linear(nn.Module):
    """A Linear (or Dense: its fused GELU, model/dense.py) layer with int8 weights (inference only), converted
    plain; ``packed_copy`` gives the same layer for oneDNN's packed kernel. Outputs come in the input's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            # one scale per output channel: the weight's rows; (out, in), torch._int_mm's right operand transposed
            self.weight_q, scale = quantize_weight(linear.weight.detach())
            self.scale = scale.reshape(1, -1)  # (1, out) float32
            self.bias = None if linear.bias is None else linear.bias.detach().float()
        self.gelu = isinstance(linear, Dense) and linear.activation == "gelu"
        self.packed = False
        self.zeros = torch.zeros(0, dtype=torch.long)  # the packed kernel's weight zero points (all 0)

    def packed_copy(self) -> Int8Linear:
        """This layer with its weight reordered into oneDNN's blocked layout (a new module: the swap is one
        assignment while passes may run); the same integer product. Needs ``packed_int8_supported()``."""
        twin = copy.copy(self)  # (nn.Module's own dicts stay shared: neither layer registers anything)
        twin.weight_q = torch.ops.onednn.qlinear_prepack(self.weight_q, None)  # from (out, in), contiguous
        twin.scale = self.scale.reshape(-1)  # (out,) float32, applied by the kernel
        twin.zeros = torch.zeros(self.out_features, dtype=torch.long)
        twin.packed = True
        return twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        if not self.packed:
            signed, row_scale = quantize_rows(flat)
            # in place after the one float32 copy: a 2,048-row pass of NV-Embed's MLP holds 117 MB per temporary
            out = torch._int_mm(signed, self.weight_q.t()).float().mul_(row_scale).mul_(self.scale)
            return self._finish(out, x.dtype).view(*lead, self.out_features)
        threads = torch.get_num_threads()
        serial = threads > 1 and flat.shape[0] * max(self.in_features, self.out_features) <= serial_limit(threads)
        try:
            if serial:
                torch.set_num_threads(1)
            rows, row_scale = quantize_rows_unsigned(flat)
            if serial:
                torch.set_num_threads(threads)  # the product on every thread
            out = _packed_product(rows, self.weight_q, self.scale, self.zeros)
            if serial:
                torch.set_num_threads(1)
            out = self._finish(out.mul_(row_scale), x.dtype)
        finally:
            if serial:
                torch.set_num_threads(threads)
        return out.view(*lead, self.out_features)

    def _finish(self, out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The bias and the fused GELU on the float32 product, then the input's dtype."""
        if self.bias is not None:
            out += self.bias
        if self.gelu:
            out = nn.functional.gelu(out)
        return out.to(dtype)

    def extra_repr(self) -> str:
        kernel = "oneDNN prepacked" if self.packed else "torch._int_mm"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights ({kernel})"


def pack_int8(
    module: nn.Module,
    stop: threading.Event | None = None,
    busy: Callable[[], bool] | None = None,
    max_wait: float = MAX_WAIT_SECONDS,
) -> tuple[int, float]:
    """Swap every plain Int8Linear under ``module`` for its packed copy, one at a time, while requests are served
    (prepack.swap_each: ``stop``, ``busy`` and ``max_wait`` as there); (layers packed, seconds). Nothing is done
    where packed_int8_supported() is False."""
    found = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, Int8Linear) and not child.packed
    ]
    if not found or not packed_int8_supported():
        return 0, 0.0
    packed = 0

    def pack(layer: Int8Linear) -> Int8Linear:
        nonlocal packed
        packed += 1
        if packed % TRIM_EVERY == 0:
            trim_heap()  # the plain weights freed so far: their packed copies do not fit in their place
        return layer.packed_copy()

    done = swap_each(found, pack, stop, busy, max_wait)
    trim_heap()
    return done


def int8_supported() -> bool:
    """This PyTorch multiplies int8 matrices on the CPU (checked on a small product)."""
    try:
        a = torch.ones(2, 8, dtype=torch.int8)
        return bool(torch.equal(torch._int_mm(a, a.t().contiguous()), torch.full((2, 2), 8, dtype=torch.int32)))
    except (RuntimeError, AttributeError):
        return False


def quantize(module: nn.Module, wide: bool = False) -> tuple[int, float]:
    """Swap every Linear (and Dense) layer under ``module`` for an Int8Linear, or with ``wide`` for a WideLinear
    holding the same int8 weight and scales (float32 products: a CPU without int8 dot products, model/widened.py),
    one at a time (each layer's float weight is released once its int8 copy is in place); (layers converted,
    seconds)."""
    start = time.perf_counter()
    maps = file_mappings()
    done = 0
    with torch.inference_mode():
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child.weight.device.type == "cpu":
                    mapped = file_backed(child.weight, maps)
                    if wide:
                        setattr(parent, name, WideLinear(child, *quantize_weight(child.weight.detach())))
                    else:
                        setattr(parent, name, Int8Linear(child))
                    if mapped:
                        drop_pages(child.weight)
                    done += 1
                    if done % TRIM_EVERY == 0:
                        trim_heap()  # the conversion's freed temporaries, before they add up
    trim_heap()
    return done, time.perf_counter() - start
