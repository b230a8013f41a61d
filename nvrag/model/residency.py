"""Weights resident before the first forward pass.

safetensors maps a checkpoint's shards into memory: a CPU tensor read from them in its stored dtype is a view of
the file's pages, and loading touches almost none of them (NV-Embed-v2 at its real shape: 1 s to load, 2.7 GiB
resident). The first forward pass would then fault in 15.7 GB page by page: 6 s on this project's CPU, against
1.3 s warm. ``populate`` asks the kernel to map every page up front (MADV_POPULATE_READ, Linux 5.14+): 0.3-0.9 s
from the page cache, no copy, so a model is as fast on its first request as on its hundredth and a server's
readiness means what it says. ``resident`` does it in a thread while the loader computes what depends only on
the weights (NV-Embed's latent matrices): the kernel maps pages while torch multiplies. Elsewhere it does
nothing and the first pass pays as before.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch

from nvrag.heap import libc

MADV_DONTNEED = 4  # linux/mman.h
MADV_POPULATE_READ = 22


@cache
def _madvise() -> Any:
    c = libc()
    if c is None:
        return None
    function = c.madvise
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def madvise_range(address: int, size: int, advice: int) -> bool:
    """madvise(2) on [address, address + size) (page-aligned); False where it failed or cannot be called."""
    madvise = _madvise()
    return madvise is not None and madvise(address, size, advice) == 0


def populate(tensors: Iterable[torch.Tensor]) -> int:
    """Map in the pages behind these CPU tensors; the number of bytes advised (0 where the kernel cannot)."""
    madvise = _madvise()
    if madvise is None:
        return 0
    done = 0
    for tensor in tensors:
        if tensor.device.type != "cpu" or tensor.is_mkldnn or tensor.numel() == 0:
            continue
        start = tensor.data_ptr()
        aligned = start - start % mmap.PAGESIZE
        size = start + tensor.numel() * tensor.element_size() - aligned
        if not madvise_range(aligned, size, MADV_POPULATE_READ):
            return done  # EINVAL before Linux 5.14: nothing more to gain
        done += size
    return done


@contextmanager
def resident(tensors: Iterable[torch.Tensor]) -> Iterator[None]:
    """Populate the tensors' pages in a background thread while the block runs; resident when it ends."""
    thread = threading.Thread(target=populate, args=(list(tensors),), name="nvrag-populate", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
