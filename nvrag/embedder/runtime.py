"""Where and how a PyTorch embedder computes: its dtype and attention backend, chosen once with one message."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import torch

from nvrag.embedder.dtypes import int8_dot_products, int8_rest_dtype, normalize_dtype, widened_bf16
from nvrag.errors import ConfigError
from nvrag.model import Backend, available_backends
from nvrag.model.int8 import pack_int8, quantize
from nvrag.model.loading import STORED, STORED_WIDE, MatmulDtype
from nvrag.model.prepack import prepack
from nvrag.model.widened import widen


def parse_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``None`` → bfloat16 on CUDA, float32 (exact) on CPU; otherwise one of float32, float16, bfloat16; for
    int8, the dtype the model loads in and computes all but its matmuls in (``int8_rest_dtype``); for bfloat16
    on a CPU without native bfloat16, float32 (``matmul_dtype`` keeps the matmul weights in bfloat16).
    (The loader, registry.load_embedder, picks the default by the CPU and the checkpoint's size: dtypes.py.)"""
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    name = normalize_dtype(name)
    if name == "int8":
        name = int8_rest_dtype()
    elif name == "bfloat16" and widened_bf16(device.type):
        name = "float32"
    dtype: torch.dtype = getattr(torch, name)  # torch's own names
    return dtype


def is_int8(name: str | None) -> bool:
    return name is not None and normalize_dtype(name) == "int8"


def matmul_dtype(name: str | None, device: torch.device) -> MatmulDtype:
    """The dtype a decoder's layer matmul weights load in, where it differs from ``parse_dtype``'s: as stored for
    int8 (they are quantised from there, one layer at a time; with the latent layer and the token embeddings in
    bfloat16, widened, where the rest computes in float32), bfloat16 where bfloat16 is widened
    (``widened_bf16``); None otherwise."""
    if name is None:
        return None
    name = normalize_dtype(name)
    if name == "int8":  # where the rest computes in float32, its bfloat16 parts are widened too
        return STORED_WIDE if int8_rest_dtype() == "float32" else STORED
    return torch.bfloat16 if name == "bfloat16" and widened_bf16(device.type) else None


def dtype_label(name: str | None, dtype: torch.dtype) -> str:
    """What a model records it computes in (ModelInfo.compute_dtype): int8 and bfloat16 as asked (a widened
    bfloat16 model's vectors are its bfloat16 weights'), else ``dtype``'s name."""
    if name is not None and normalize_dtype(name) in ("int8", "bfloat16"):
        return normalize_dtype(name)
    return str(dtype).removeprefix("torch.")


def convert_matmuls(
    model: torch.nn.Module, name: str | None, device: torch.device, layers: torch.nn.Module | None = None
) -> None:
    """After loading with ``matmul_dtype``: the decoder ``layers`` (default: the whole model) quantised for int8
    (model/int8.py; widened where the CPU has no int8 dot products); every bfloat16 matmul of the model widened
    where bfloat16 is (model/widened.py); nothing otherwise."""
    if is_int8(name):
        quantize(model if layers is None else layers, wide=not int8_dot_products())
    if matmul_dtype(name, device) in (torch.bfloat16, STORED_WIDE):
        widen(model)  # (an int8 model's bfloat16 latent layer: its decoder layers are converted already)


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
