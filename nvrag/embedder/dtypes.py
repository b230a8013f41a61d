"""Which floating-point type a model computes in, when the user does not say.

bfloat16 where the hardware computes it natively: CUDA GPUs, and CPUs with AVX-512 BF16 or AMX (on this
project's 2-core EPYC, about 2.2x float32's matmul peak; the bundled model's NFCorpus nDCG@10 is 0.3164 in
float32 and 0.3153 in bfloat16: docs/performance.md). float32 elsewhere, where bf16 would be emulated and
slower. And bfloat16 on any CPU for a checkpoint whose float32 weights would not fit comfortably in memory
(NV-Embed-v2: 29 GiB in float32), with a note saying so. On a CPU without native bfloat16, bfloat16 means the
decoder layers' matmul weights in bfloat16 and the arithmetic in float32 (``widened_bf16``, model/widened.py).
``float32`` on request is exact: the golden values are float32. ``int8`` (embedders on the CPU only): int8
matmul weights on the CPU's int8 dot products (VNNI, AMX), or where it has none widened to float32 like bfloat16.

No torch here: the choice is made before a model loads (and ``nvrag info`` shows it without loading torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nvrag.errors import ConfigError

DTYPE_NAMES = ("float32", "float16", "bfloat16", "int8")
INT8_DOT_FLAGS = ("avx_vnni", "avx512_vnni", "amx_int8")  # CPU features with int8 dot products, weakest first
_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo: bf16 dot products in hardware
COMFORTABLE_SHARE = 0.5  # float32 weights above this share of memory: bfloat16 by default on the CPU
CPU_WIDTH_STEP = 16  # on the CPU, oneDNN sets kernels up per shape: fewer batch widths reuse them


def cpu_batch_width(width: int, limit: int) -> int:
    """The width to pad a CPU batch to: ``width`` rounded up to a multiple of 16, but not past ``limit`` (the
    model's longest input). In bfloat16 it measured 5-10% faster; and it bounds the number of batch shapes a
    long run meets, each of which oneDNN keeps a kernel and buffers for (docs/performance.md). Decoders whose
    weights a server prepacked skip it: their kernel takes any width, and padded rows cost their share of
    every matmul (NV-Embed's shapes, prepacked: 29 rows 11.3-11.9 ms, padded to 32 12.1-12.9 ms)."""
    return max(width, min(-(-width // CPU_WIDTH_STEP) * CPU_WIDTH_STEP, limit))


def normalize_dtype(name: str) -> str:
    """float32 | float16 | bfloat16 | int8 (also fp32, fp16, half, bf16), or ConfigError naming the choices."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {name!r}; use float32, float16, bfloat16 or int8")
    return key


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's feature flags (Linux); empty where there is no /proc/cpuinfo."""
    try:
        with cpuinfo.open(encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> str | None:
    """The CPU feature that computes bfloat16 natively (``avx512_bf16`` or ``amx_bf16``), or None."""
    flags = cpu_flags() if flags is None else flags
    found = [f for f in NATIVE_BF16_FLAGS if f in flags]
    return found[-1] if found else None


def widened_bf16(device: str, flags: frozenset[str] | None = None) -> bool:
    """Whether bfloat16 on ``device`` means bfloat16 matmul weights computed in float32 (model/widened.py): a CPU
    without native bfloat16, where PyTorch's emulated bfloat16 matmuls ran 2.5-5.9x slower than float32's."""
    return device.startswith("cpu") and native_bf16(flags) is None


WIDENED = "its matmul weights in bfloat16, the arithmetic in float32, as this CPU has no bfloat16 arithmetic"
WIDENED_INT8 = (
    "int8 weights with a scale per output channel, the arithmetic in float32, as this CPU has no int8 dot "
    "products: half bfloat16's weight memory, about as fast"
)


def memory_bytes() -> int | None:
    """Memory this process may use: the machine's, or a container's cgroup limit when that is smaller."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text(encoding="ascii").strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


@dataclass(frozen=True)
class DtypeChoice:
    name: str  # float32 | float16 | bfloat16
    reason: str  # why, in words
    note: str | None = None  # a line worth printing: the default differs from what the user may expect


def choose_dtype(
    requested: str | None,
    device: str,
    *,
    fp32_bytes: int | None = None,
    flags: frozenset[str] | None = None,
    memory: int | None = None,
) -> DtypeChoice:
    """The dtype a model runs in: ``requested`` if given, else the default for ``device`` (see the module)."""
    if requested:
        name = normalize_dtype(requested)
        if device.startswith("cpu") and name == "float16":
            raise ConfigError("--dtype float16 is for GPUs (CPUs compute it slowly or not at all); use bfloat16")
        if name == "int8":
            return _int8(device, flags)
        if name == "bfloat16" and widened_bf16(device, flags):
            return DtypeChoice(name, f"as requested: {WIDENED}")
        return DtypeChoice(name, "as requested")
    if device.startswith("cuda"):
        return DtypeChoice("bfloat16", "a CUDA GPU computes bfloat16 natively")
    feature = native_bf16(flags)
    if feature:
        return DtypeChoice("bfloat16", f"the CPU computes it natively: {feature}")
    memory = memory_bytes() if memory is None else memory
    if fp32_bytes and memory and fp32_bytes > COMFORTABLE_SHARE * memory:
        gib = 2**30
        note = (
            f"dtype: bfloat16, since the weights in float32 ({fp32_bytes / gib:.1f} GiB) would not fit comfortably "
            f"in this machine's {memory / gib:.1f} GiB: {WIDENED}; --dtype float32 for exact vectors"
        )
        return DtypeChoice("bfloat16", f"float32 weights would not fit comfortably in memory: {WIDENED}", note)
    return DtypeChoice("float32", "the CPU has no native bfloat16")


def _int8(device: str, flags: frozenset[str] | None) -> DtypeChoice:
    if not device.startswith("cpu"):
        raise ConfigError("--dtype int8 is for CPUs (their int8 dot products); on a GPU use bfloat16")
    found = [f for f in INT8_DOT_FLAGS if f in (cpu_flags() if flags is None else flags)]
    if not found:
        return DtypeChoice("int8", f"as requested: {WIDENED_INT8}")
    rest = "bfloat16" if native_bf16(flags) else "float32"
    return DtypeChoice(
        "int8", f"as requested: int8 weights and activations on the CPU's {found[-1]}, the rest in {rest}"
    )


def int8_dot_products(flags: frozenset[str] | None = None) -> bool:
    """This CPU multiplies int8 vectors natively (VNNI or AMX); without, int8 weights are widened to float32."""
    return any(f in (cpu_flags() if flags is None else flags) for f in INT8_DOT_FLAGS)


def int8_rest_dtype(flags: frozenset[str] | None = None) -> str:
    """What an int8 model computes the rest in (embeddings, norms, attention): bfloat16 where the CPU has it
    natively, else float32."""
    return "bfloat16" if native_bf16(flags) else "float32"


def choose_query_dtype(requested: str | None, device: str) -> DtypeChoice:
    """The bundled model's dtype when it only embeds queries (a retriever): ``requested`` if given; on the CPU
    float32, which is exact and costs nothing on a query's few tokens (and runs on the NumPy engine, no torch);
    elsewhere choose_dtype's default."""
    if not requested and device.split(":")[0] == "cpu":
        return DtypeChoice("float32", "queries on the CPU: exact, and a query is a few tokens")
    return choose_dtype(requested, device)
