"""Matmul weights prepacked for this CPU's kernels, for processes that answer many requests.

On the CPU, every bfloat16 ``F.linear`` call hands oneDNN a plain row-major weight, which its kernel reorders
into its own blocked layout as it goes: at the few rows of a query that reordering is a third of the time.
``prepack`` reorders each of a module's bfloat16 Linear weights once (``torch.ops.mkldnn``'s reorder, the one
PyTorch's own CPU compiler uses when it freezes a model) and swaps in a ``PackedLinear`` that calls the kernel
with the packed weight: the same kernel, so the same arithmetic (the tests compare the outputs), measured
25-35% faster per matmul at 16-64 rows on this project's 2-core AVX-512 BF16 CPU and ~5% at 512 rows
(docs/performance.md, "NV-Embed-v2 at its real shape").

Reordering costs about as much as a few queries (NV-Embed-v2: ~10-20 s on 2 cores for 15 GB of weights), so
servers do it in the background after they are ready (a module at a time, while requests are served: each
swap is one attribute assignment); one-shot commands never do. Memory stays flat: a weight that is a view of
the checkpoint's mapped shard has its pages dropped from this process once its packed copy is in place (they
are still the file's, so a pass that still holds the old weight reads it back from the page cache).
"""

from __future__ import annotations

import mmap
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from nvrag.model.dense import Dense
from nvrag.model.residency import MADV_DONTNEED, madvise_range

PACK_HINT_ROWS = 64  # the rows oneDNN is told to expect: queries and small batches, where packing pays
MAX_WAIT_SECONDS = 1.0  # a busy server still gets a layer packed at least this often
Layer = TypeVar("Layer", bound=nn.Module)


@cache
def prepack_supported() -> bool:
    """This PyTorch can reorder bfloat16 weights for oneDNN's CPU matmul and call it with them."""
    ops = torch.ops.mkldnn
    needed = ("_reorder_linear_weight", "_linear_pointwise", "_is_mkldnn_bf16_supported")
    return (
        bool(torch._C._has_mkldnn) and all(hasattr(ops, op) for op in needed) and bool(ops._is_mkldnn_bf16_supported())
    )


class PackedLinear(nn.Module):
    """A Linear layer whose weight is in oneDNN's blocked layout (inference only). A ``Dense`` layer keeps its
    fused activation and casts its input to bfloat16 first, as it did (model/dense.py)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_HINT_ROWS)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.dense = isinstance(linear, Dense)
        self.post_op = ("gelu", "none") if self.dense and linear.activation == "gelu" else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense:
            x = x.to(torch.bfloat16)
        elif x.dtype != torch.bfloat16:  # (only bfloat16 weights are packed)
            raise TypeError(f"PackedLinear takes bfloat16 inputs, not {x.dtype}")
        lead = x.shape[:-1]
        attr, algorithm = self.post_op
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, self.in_features), self.packed, self.bias, attr, [], algorithm
        )
        return out.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def file_mappings() -> tuple[list[int], list[tuple[int, str]]]:
    """This process's file-backed mappings: sorted starts, and (end, path) for each."""
    starts: list[int] = []
    rest: list[tuple[int, str]] = []
    maps = Path("/proc/self/maps")
    if not maps.is_file():  # not Linux: nothing is known to be mapped, so no page is dropped
        return starts, rest
    with maps.open(encoding="ascii", errors="replace") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                starts.append(start)
                rest.append((end, parts[5].strip()))
    order = sorted(range(len(starts)), key=starts.__getitem__)
    return [starts[i] for i in order], [rest[i] for i in order]


def file_backed(tensor: torch.Tensor, maps: tuple[list[int], list[tuple[int, str]]]) -> bool:
    starts, rest = maps
    address = tensor.data_ptr()
    i = bisect_right(starts, address) - 1
    return i >= 0 and address + tensor.numel() * tensor.element_size() <= rest[i][0]


def drop_pages(tensor: torch.Tensor) -> None:
    """Forget this process's copy of a file-backed tensor's whole pages (the file keeps them)."""
    start, end = tensor.data_ptr(), tensor.data_ptr() + tensor.numel() * tensor.element_size()
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # only pages wholly inside the tensor
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        madvise_range(first, last - first, MADV_DONTNEED)


def packable(module: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every bfloat16 CPU Linear (or Dense) layer under ``module``."""
    found: list[tuple[nn.Module, str, nn.Linear]] = []
    for parent in module.modules():
        for name, child in parent.named_children():
            linear = type(child) is nn.Linear or isinstance(child, Dense)
            # (a released projection keeps an empty weight: nothing to pack)
            if (
                linear
                and child.weight.dtype == torch.bfloat16
                and child.weight.device.type == "cpu"
                and child.weight.numel()
            ):
                assert isinstance(child, nn.Linear)
                found.append((parent, name, child))
    return found


def prepack(
    module: nn.Module,
    stop: threading.Event | None = None,
    busy: Callable[[], bool] | None = None,
    max_wait: float = MAX_WAIT_SECONDS,
) -> tuple[int, float]:
    """Swap every bfloat16 CPU Linear layer under ``module`` for a PackedLinear (``swap_each``); (layers packed,
    seconds). Nothing is done where prepack_supported() is False."""
    if not prepack_supported():
        return 0, 0.0
    return swap_each(packable(module), PackedLinear, stop, busy, max_wait)


def swap_each(
    found: list[tuple[nn.Module, str, Layer]],
    convert: Callable[[Layer], nn.Module],
    stop: threading.Event | None = None,
    busy: Callable[[], bool] | None = None,
    max_wait: float = MAX_WAIT_SECONDS,
) -> tuple[int, float]:
    """Replace each (parent, attribute, layer) with ``convert(layer)``, one at a time (each swap is one attribute
    assignment, so a pass running meanwhile uses either layer whole): ``stop``: quit between layers; ``busy``:
    while it says requests are running, wait before the next layer, up to ``max_wait`` seconds, so they keep the
    cores. A replaced weight mapped from the checkpoint's file has its pages dropped. ``found`` is emptied as it
    goes, so each replaced layer is freed once swapped, not when the last one is (a list holding every replaced
    layer kept a copy of each of int8's anonymous weights: NV-Embed-v2's server peaked at 14 GiB instead of 8).
    (layers swapped, seconds)."""
    start = time.perf_counter()
    maps = file_mappings()
    done = 0
    found.reverse()
    with torch.inference_mode():
        while found:
            parent, name, layer = found.pop()
            if stop is not None and stop.is_set():
                break
            waited = time.monotonic()
            while busy is not None and busy() and time.monotonic() - waited < max_wait:
                time.sleep(0.01)
            replacement = convert(layer)
            weight = getattr(layer, "weight", None)
            mapped = weight if isinstance(weight, torch.Tensor) and file_backed(weight, maps) else None
            setattr(parent, name, replacement)
            if mapped is not None:
                drop_pages(mapped)
            done += 1
    return done, time.perf_counter() - start
