"""Pooling as data: which hidden states make a sequence's vector.

- ``last``: the last real token's state (the appended EOS of Qwen3, gte-Qwen2, e5-mistral). Batches are
  right-padded here, so it is position ``length - 1`` of each row, whatever side the reference padded on.
- ``mean``: the mean over the tokens the pool mask keeps: every real token, or, where the pooling config
  says ``include_prompt: false``, the real tokens after the prompt (the caller builds that mask).
- ``cls``: the first token's state.
- NV-Embed's latent attention is a layer applied before ``mean`` (model/latent.py, model/nvembed.py).

Normalisation and Matryoshka cuts happen after pooling, in the embedder: cut to ``dimensions``, then
normalise (normalising first and cutting after gives vectors that are not unit length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812

PoolingKind = Literal["last", "mean", "cls"]
# a mean over no token (a text all prompt, with include_prompt false) is a zero vector, as sentence-transformers
# computes it (its token count is clamped to 1e-9); NV-Embed's embedder refuses such inputs before they get here
EMPTY = 1e-9
POOLING_KINDS: tuple[PoolingKind, ...] = ("last", "mean", "cls")


@dataclass(frozen=True)
class PoolingSpec:
    kind: PoolingKind = "mean"
    include_prompt: bool = True  # mean: prompt tokens count (sentence-transformers' include_prompt)


def pool_packed(
    hidden: torch.Tensor, pool_weights: torch.Tensor, cu_seqlens: torch.Tensor, kind: PoolingKind
) -> torch.Tensor:
    """hidden (T, H) packed, pool_weights (T,), cu_seqlens (B+1,) → float32 (B, H)."""
    if kind == "last":
        return hidden[cu_seqlens[1:] - 1].float()
    if kind == "cls":
        return hidden[cu_seqlens[:-1]].float()
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths)
    summed = torch.zeros(len(lengths), hidden.shape[-1], dtype=torch.float32, device=hidden.device)
    summed.index_add_(0, segment, hidden.float() * pool_weights.float()[:, None])
    counts = torch.zeros(len(lengths), dtype=torch.float32, device=hidden.device)
    counts.index_add_(0, segment, pool_weights.float())
    return summed / counts.clamp(min=EMPTY)[:, None]


def read_tokens(kind: PoolingKind, pool_weights: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Which packed tokens (T,) a pooling reads: each sequence's last real token (``last``) or first (``cls``),
    or the tokens a ``mean`` weighs (pool weight not zero: a query's text without its instruction, 11 of a
    one-line NV-Embed-v2 query's 29 tokens). The decoder computes the rest of its last layer, and any layer
    applied to each token before the mean (NV-Embed's latent attention), on these tokens only."""
    if kind == "mean":
        return pool_weights != 0
    keep = torch.zeros(pool_weights.shape[0], dtype=torch.bool, device=pool_weights.device)
    keep[cu_seqlens[1:] - 1 if kind == "last" else cu_seqlens[:-1]] = True
    return keep


def kept_bounds(keep: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """The sequences' bounds (B+1,) among the kept tokens of packed sequences bounded by ``cu_seqlens``. A
    sequence left with no token pools to zero, as it did with all of them."""
    return F.pad(keep.cumsum(0), (1, 0))[cu_seqlens]
