"""Mistral-7B made bidirectional: RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU, final norm.

Runs either on padded batches (B, L, hidden) with a key-padding mask, or on packed tokens (T, hidden) with
cumulative sequence lengths (padding-free). No causal mask, no sliding window, no KV cache (NVEMBED.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.attention import (
    Backend,
    eager_attention,
    flash_attention,
    sdpa_attention,
    varlen_attention,
)
from nvrag.model.config import MistralConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in float32 whatever the weights' dtype, as Mistral does
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos and sin tables (len(positions), head_dim) for rotate-half RoPE, computed in float32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)  # (d/2,)
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (n, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n, d)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class Batch:
    """What attention needs besides the hidden states: the mask (padded) or the sequence bounds (packed)."""

    backend: Backend
    cos: torch.Tensor  # padded: (L, d); packed: (T, d)
    sin: torch.Tensor
    key_mask: torch.Tensor | None = None  # padded: (B, L), 1 for real tokens
    cu_seqlens: torch.Tensor | None = None  # packed: (B+1,)
    max_seqlen: int = 0

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None


class SelfAttention(nn.Module):
    def __init__(self, config: MistralConfig) -> None:
        super().__init__()
        d = config.head_dim
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.q = nn.Linear(config.hidden_size, self.heads * d, bias=False)
        self.k = nn.Linear(config.hidden_size, self.kv_heads * d, bias=False)
        self.v = nn.Linear(config.hidden_size, self.kv_heads * d, bias=False)
        self.o = nn.Linear(self.heads * d, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        lead = x.shape[:-1]  # (B, L) padded or (T,) packed
        q = self.q(x).view(*lead, self.heads, self.head_dim)
        k = self.k(x).view(*lead, self.kv_heads, self.head_dim)
        v = self.v(x).view(*lead, self.kv_heads, self.head_dim)
        cos, sin = batch.cos.unsqueeze(-2), batch.sin.unsqueeze(-2)  # broadcast over heads
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if batch.packed:
            assert batch.cu_seqlens is not None
            if batch.backend == "flash":
                out = flash_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen)
            else:
                out = varlen_attention(q, k, v, batch.cu_seqlens)  # (T, H, d)
        else:
            assert batch.key_mask is not None
            attend = eager_attention if batch.backend == "eager" else sdpa_attention
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, d)
            out = attend(q, k, v, batch.key_mask).transpose(1, 2)  # (B, L, H, d)
        projected: torch.Tensor = self.o(out.reshape(*lead, self.heads * self.head_dim))
        return projected


class SwiGLU(nn.Module):
    def __init__(self, config: MistralConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down(F.silu(self.gate(x)) * self.up(x))
        return out


class Layer(nn.Module):
    def __init__(self, config: MistralConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = SelfAttention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), batch)
        out: torch.Tensor = x + self.mlp(self.mlp_norm(x))
        return out


class BidirectionalMistral(nn.Module):
    def __init__(self, config: MistralConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, ids: torch.Tensor, batch: Batch) -> torch.Tensor:
        """ids (B, L) padded or (T,) packed → final hidden states of the same leading shape."""
        x: torch.Tensor = self.embed(ids)
        for layer in self.layers:
            x = layer(x, batch)
        out: torch.Tensor = self.norm(x)
        return out
