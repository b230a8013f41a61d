"""Self-attention backends, bidirectional or causal (optionally within a sliding window). All compute
softmax(QKᵀ/√d)V over the non-padding keys a query may see.

- ``eager``: the readable reference, an additive key-padding mask, softmax in float32.
- ``sdpa``: torch's scaled_dot_product_attention with a boolean key-padding mask (padded batches).
- ``varlen``: padding-free: tokens of all sequences packed into one (T, heads, d) tensor with cumulative
  sequence lengths, each sequence attended on its own (torch SDPA per sequence; runs anywhere).
- ``flash``: the same packed layout through flash-attn's varlen kernel (CUDA, fp16/bf16, flash-attn installed).
"""

from __future__ import annotations

import importlib.util
import itertools
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

Backend = Literal["eager", "sdpa", "varlen", "flash"]
PADDED_BACKENDS: tuple[Backend, ...] = ("eager", "sdpa")
PACKED_BACKENDS: tuple[Backend, ...] = ("varlen", "flash")


def flash_available(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and importlib.util.find_spec("flash_attn") is not None
    )


def available_backends(device: torch.device, dtype: torch.dtype) -> list[Backend]:
    backends: list[Backend] = ["eager", "sdpa", "varlen"]
    if flash_available(device, dtype):
        backends.append("flash")
    return backends


def _repeat_kv(x: torch.Tensor, groups: int, dim: int) -> torch.Tensor:
    # GQA: query head h reads key/value head h // groups, i.e. repeat_interleave (not tile)
    return x if groups == 1 else x.repeat_interleave(groups, dim=dim)


def visible_keys(key_mask: torch.Tensor, *, causal: bool = False, window: int | None = None) -> torch.Tensor:
    """Boolean (B, 1, L, L) or (B, 1, 1, L): which keys each query sees. Padding keys never; with ``causal``
    only keys at or before the query, and with ``window`` only the last ``window`` of those."""
    keys = key_mask[:, None, None, :].bool()
    if not causal:
        return keys
    length = key_mask.shape[1]
    position = torch.arange(length, device=key_mask.device)
    offset = position[:, None] - position[None, :]  # query - key
    allowed = offset >= 0
    if window is not None:
        allowed = allowed & (offset < window)
    return keys & allowed[None, None]


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
) -> torch.Tensor:
    """q (B, H, L, d), k/v (B, Hkv, L, d), key_mask (B, L) with 1 for real tokens → (B, H, L, d)."""
    groups = q.shape[1] // k.shape[1]
    k, v = _repeat_kv(k, groups, 1), _repeat_kv(v, groups, 1)
    scores = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)  # (B, H, L, L)
    seen = visible_keys(key_mask, causal=causal, window=window)
    additive = (~seen).to(scores.dtype) * torch.finfo(scores.dtype).min
    probs = torch.softmax(scores + additive, dim=-1, dtype=torch.float32).to(q.dtype)
    return probs @ v


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
) -> torch.Tensor:
    """Same contract as eager_attention."""
    groups = q.shape[1] // k.shape[1]
    k, v = _repeat_kv(k, groups, 1), _repeat_kv(v, groups, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible_keys(key_mask, causal=causal, window=window))


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
) -> torch.Tensor:
    """q (T, H, d), k/v (T, Hkv, d), cu_seqlens (B+1,) → (T, H, d); sequences never see each other."""
    groups = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in itertools.pairwise(bounds):
        qs = q[start:end].transpose(0, 1)  # (H, n, d)
        ks = _repeat_kv(k[start:end], groups, 1).transpose(0, 1)
        vs = _repeat_kv(v[start:end], groups, 1).transpose(0, 1)
        if causal and window is not None and end - start > window:
            mask = visible_keys(torch.ones(1, end - start, device=q.device), causal=True, window=window)[0]
            out[start:end] = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask).transpose(0, 1)
        else:
            out[start:end] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal).transpose(0, 1)
    return out


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    causal: bool = False,
    window: int | None = None,
) -> torch.Tensor:
    """flash-attn's padding-free kernel; same contract as varlen_attention. GQA is native to the kernel."""
    from flash_attn import flash_attn_varlen_func  # optional dependency (the `gpu` extra)

    cu = cu_seqlens.to(torch.int32)
    # flash-attn's window (left, right): a query sees keys at most ``left`` positions back; -1 is unbounded
    left = window - 1 if causal and window is not None else -1
    out: torch.Tensor = flash_attn_varlen_func(
        q, k, v, cu, cu, max_seqlen, max_seqlen, causal=causal, window_size=(left, -1)
    )
    return out
