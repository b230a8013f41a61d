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

For few input rows (a query, a short document) on a CPU with AVX2 and FMA the product runs in nvrag's compiled
kernel (model/_widemm.c, built by setup.py) when the build had a C compiler: it widens each small panel of the
weight once into L1 and multiplies every row from there, one pass over the weight where PyTorch makes two (the
widening copy, then MKL's sgemm, which packs the weight again and reaches about a third of the float32 peak at
~30 rows). Per NV-Embed-v2 decoder layer at 29 rows on an AVX2 EPYC: 1.8-2.1x faster than PyTorch's two passes,
about 80% of the float32 peak measured in the same run, bfloat16 and int8 alike (bench/wide_linear.py; a real-shape
query's products in process 147 GFLOP/s against 181, bench/nvembed_realshape.py). Its sums run in another order than
BLAS's: the same product to float32 rounding. Its threads are PyTorch's own OpenMP threads (kernel_product).
"""

from __future__ import annotations

import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from nvrag.model.dense import Dense


def _load_kernel() -> ModuleType | None:
    """The compiled kernel, where this CPU can run it; None where the install had no C compiler (or was built
    off x86-64) or the CPU lacks AVX2 and FMA (what PyTorch's AVX2 and AVX-512 capability levels imply): PyTorch
    then computes the same product."""
    try:
        kernel = importlib.import_module("nvrag.model._widemm")
    except ImportError:  # pragma: no cover - depends on the build
        return None
    runs = kernel.available() and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return kernel if runs else None


_widemm = _load_kernel()

NARROW = (torch.bfloat16, torch.float16)
# The widened block's bytes: a few MiB while the input has few rows (a query: the block is read from cache by
# the product right after it is written), more for large batches, where each block's product re-reads the whole
# input and a larger block amortises that. Measured on an AVX2 EPYC (bench/wide_linear.py).
FEW_ROWS = 64
SMALL_BLOCK_BYTES = 4 << 20
LARGE_BLOCK_BYTES = 64 << 20
BLOCK_ALIGN = 64  # block rows are a multiple of this (whole kernel panels)
KERNEL_KINDS = {torch.bfloat16: 0, torch.int8: 1}  # the weight dtypes the compiled kernel reads
KERNEL_ALIGN = 8  # its input width must be a multiple of this (one AVX2 vector), its column slices of 4
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_openmp = True  # the kernel may run in the process's OpenMP threads (not in a forked child: see _forked)


def kernel_available() -> bool:
    """Whether the compiled few-rows kernel runs here (``_load_kernel``)."""
    return _widemm is not None


def uses_kernel(rows: int, weight: torch.Tensor) -> bool:
    """Whether ``wide_product`` gives an input of ``rows`` rows and this weight to the compiled kernel."""
    return (
        0 < rows <= FEW_ROWS
        and weight.dtype in KERNEL_KINDS
        and weight.device.type == "cpu"
        and weight.is_contiguous()
        and weight.shape[1] % KERNEL_ALIGN == 0
        and kernel_available()
    )


def _forked() -> None:
    """In a forked child the pools' threads are gone (an executor that believes it has them would never run a
    task): it starts its own, with a fresh lock (another thread may have held this one at the fork). So are the
    OpenMP runtime's, and GNU's never notices (a parallel region in the child waits for them forever: PyTorch's
    own parallel ops too), so the child's kernel runs in nvrag's pool."""
    global _pools_lock, _openmp
    _pools.clear()
    _pools_lock = threading.Lock()
    _openmp = False


os.register_at_fork(after_in_child=_forked)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="nvrag-widemm")
        return _pools[threads]


def kernel_product(flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``flat @ weight.T`` (times ``scale`` per output for int8) by the compiled kernel, its columns split over
    PyTorch's thread count: run by PyTorch's own OpenMP threads (``_widemm.team``: other threads would share the
    cores with them while they spin-wait after each op), or by a pool of nvrag's where the process has no OpenMP
    runtime or is a forked child (the kernel releases the GIL). ``flat`` (rows, in) float32 on the CPU; see
    uses_kernel."""
    assert _widemm is not None and flat.dtype == torch.float32 and uses_kernel(flat.shape[0], weight)
    flat = flat.contiguous()
    rows, in_features = flat.shape
    out_features = weight.shape[0]
    out = torch.empty(rows, out_features, dtype=torch.float32)
    scale = None if scale is None else scale.reshape(-1).float().contiguous()
    threads = max(1, min(torch.get_num_threads(), out_features // 4))
    stride = rows * (in_features + 16)
    scratch = torch.empty(threads, stride, dtype=torch.float32)
    common = (flat.data_ptr(), rows, in_features, in_features, weight.data_ptr(), KERNEL_KINDS[weight.dtype])
    scale_at = 0 if scale is None else scale.data_ptr()
    # named for the profiler (bench/nvembed_realshape.py counts it with the matmuls); it is not a torch op
    with torch.profiler.record_function(f"nvrag::widemm [{rows}, {in_features}] -> {out_features}"):
        if threads == 1:
            _widemm.widemm(*common, scale_at, 0, out_features, out.data_ptr(), out_features, scratch.data_ptr())
        elif not _openmp or not _widemm.team(
            *common, scale_at, out_features, out.data_ptr(), out_features, scratch.data_ptr(), stride, threads
        ):  # no OpenMP runtime in this process (a PyTorch built without one), or a forked child: nvrag's threads
            cuts = [out_features * i // threads // 4 * 4 for i in range(threads)] + [out_features]
            calls = [
                (*common, scale_at, cuts[i], cuts[i + 1], out.data_ptr(), out_features, scratch[i].data_ptr())
                for i in range(threads)
            ]
            for done in [_pool(threads).submit(_widemm.widemm, *call) for call in calls]:
                done.result()
    return out


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
    if uses_kernel(flat.shape[0], weight):
        out = kernel_product(flat, weight, scale)
        if bias is not None:
            out += bias.float()
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
