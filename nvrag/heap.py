"""The C heap's policy for a process that runs models on the CPU (glibc's malloc; elsewhere nothing changes).

A forward pass over a large batch allocates and frees temporaries of tens to hundreds of megabytes (NV-Embed-v2 at
2,048 tokens: 58-235 MB each, hundreds per pass). glibc serves every block over 32 MB with a fresh ``mmap`` and
unmaps it on free, so each such temporary is faulted in and zeroed page by page again: converting a 2,048 x
14,336 bfloat16 tensor to float32 took 35-48 ms that way against 3-5 ms in reused memory (this project's 2-core
VM), and a real-shape NV-Embed-v2 pass of four 512-token documents in int8 spent 30% of its time there.
``reuse_freed_blocks`` keeps large blocks in the heap, where a freed one is reused by the next allocation, with
one arena for every thread (a worker thread's own arena can hold no block over 64 MB, so it would map them
anyway). It must run before the process starts threads that allocate (PyTorch's and OpenMP's): the CLI calls it
first thing. The cost is memory that stays resident after a large pass (the pass's own peak, which a server
needs again for the next one) until ``trim_heap`` hands the freed pages back: a served model's worker calls it
after 5 s idle, and after the model is unloaded (embedder/work_queue.py). A process whose
environment already tunes malloc (``GLIBC_TUNABLES`` with ``glibc.malloc.*``, a ``MALLOC_*`` variable, or another
allocator preloaded) keeps its own settings.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Mapping
from functools import cache
from typing import Any

M_TRIM_THRESHOLD = -1  # malloc.h's mallopt parameters
M_MMAP_MAX = -4
M_ARENA_MAX = -8
KEEP_FREE_TOP = 1 << 30  # free memory at the heap's top kept for the next pass before glibc trims it


@cache
def libc() -> Any:
    """The C library through ctypes, on Linux; None elsewhere. The process's own symbols (``dlopen(NULL)``),
    which hold the C library's: every CLI process asks for it at start, and finding the library by name
    (``ctypes.util.find_library``) runs ``ldconfig`` (3 ms)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def tuned_by_environment(environ: Mapping[str, str]) -> bool:
    """The environment already chooses malloc's behaviour (glibc's tunables or MALLOC_* variables, or another
    allocator such as jemalloc or tcmalloc preloaded)."""
    return (
        "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
        or any(name.startswith("MALLOC_") for name in environ)
        or any(name in environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))
    )


def reuse_freed_blocks(environ: Mapping[str, str]) -> bool:
    """Serve large allocations from one reused heap instead of fresh mappings (see above); False where the
    process's environment (``environ``) tunes malloc itself, or the C library has no glibc ``mallopt`` (musl,
    macOS) or refused a setting."""
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None or tuned_by_environment(environ):
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_FREE_TOP))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim); False where there is no such call.
    Freed temporaries stay in the heap, counted in RSS, until something reuses them: converting NV-Embed-v2's 224
    weights to int8 left 0.7 GiB of them (measured: RSS 7.7 -> 7.0 GiB trimmed)."""
    trim = getattr(libc(), "malloc_trim", None)  # glibc only (not musl)
    if trim is None:
        return False
    trim(0)
    return True
