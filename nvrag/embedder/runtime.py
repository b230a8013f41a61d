"""Where and how a PyTorch embedder computes: its dtype and attention backend, chosen once with one message."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import torch

from nvrag.embedder.dtypes import int8_rest_dtype, normalize_dtype
from nvrag.errors import ConfigError
from nvrag.model import Backend, available_backends
from nvrag.model.int8 import pack_int8
from nvrag.model.prepack import prepack


def parse_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``None`` → bfloat16 on CUDA, float32 (exact) on CPU; otherwise one of float32, float16, bfloat16; for
    int8, the dtype the model loads in and computes all but its matmuls in (``int8_rest_dtype``).
    (The loader, registry.load_embedder, picks the default by the CPU and the checkpoint's size: dtypes.py.)"""
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    name = normalize_dtype(name)
    dtype: torch.dtype = getattr(torch, int8_rest_dtype() if name == "int8" else name)  # torch's own names
    return dtype


def is_int8(name: str | None) -> bool:
    return name is not None and normalize_dtype(name) == "int8"


def choose_backend(requested: str, device: torch.device, dtype: torch.dtype) -> Backend:
    available = available_backends(device, dtype)
    if requested == "auto":
        return "flash" if "flash" in available else "sdpa"
    if requested not in ("eager", "sdpa", "varlen", "flash"):
        raise ConfigError(f"unknown attention backend {requested!r}; use auto, eager, sdpa, varlen or flash")
    if requested not in available:
        reason = "flash-attn is not installed" if importlib.util.find_spec("flash_attn") is None else ""
        reason = reason or "it needs a CUDA device and float16/bfloat16"
        raise ConfigError(f"attention backend 'flash' is not available here: {reason}")
    return requested


def prepack_weights(
    name: str,
    module: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    busy: Callable[[], bool] | None = None,
) -> str | None:
    """Prepack a CPU model's matmul weights for its kernels: bfloat16 ones (model/prepack.py; ``dtype`` is the
    model's) and int8 ones, whatever the rest computes in (model/int8.py); the line saying so, or None."""
    if device.type != "cpu":
        return None
    layers, seconds = prepack(module, busy=busy) if dtype == torch.bfloat16 else (0, 0.0)
    int8_layers, int8_seconds = pack_int8(module, busy=busy)
    if not layers + int8_layers:
        return None
    what = f"{layers + int8_layers} matmul weights" if not int8_layers else f"{int8_layers} int8 matmul weights"
    if layers and int8_layers:
        what += f" and {layers} bfloat16 ones"
    took = seconds + int8_seconds
    return f"{name}: {what} prepacked for this CPU's kernels in {took:.1f} s (faster queries)"


def right_padded(
    batch: Sequence[Sequence[int]], pad_id: int, skip: int = 0, width: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, pool_mask), each (B, L): rows right-padded with ``pad_id`` to the longest
    (or ``width``, if wider), the pool mask leaving out each row's first ``skip`` positions (a prompt)."""
    width = max(width, *(len(ids) for ids in batch))
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    pool_mask = attention_mask.clone()
    pool_mask[:, :skip] = 0
    return input_ids, attention_mask, pool_mask
