"""The decoder backbone of every supported embedder: Mistral, Llama, Qwen2 and Qwen3, causal or bidirectional.

RMSNorm, rotate-half RoPE (llama3 and linear scaling), grouped-query attention with optional q/k/v/o biases
and Qwen3's per-head q/k RMSNorm, SwiGLU with an optional bias, the final norm (the hidden states every
pooling reads are the final norm's output). NV-Embed-v2's backbone is the bidirectional Mistral configuration.

Runs either on padded batches (B, L, hidden) with a key-padding mask, or on packed tokens (T, hidden) with
cumulative sequence lengths (padding-free). Batches are right-padded and positions count from 0 in every
row: RoPE sees only relative positions, so this equals a reference that pads on the left. No KV cache.
"""

from __future__ import annotations

import math
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
from nvrag.model.decoder_config import DecoderConfig, RopeConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in float32 whatever the weights' dtype, as Mistral, Llama and Qwen do
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def inverse_frequencies(rope: RopeConfig, head_dim: int, device: torch.device | None = None) -> torch.Tensor:
    """RoPE's inverse frequencies (head_dim / 2,), float32, with the configured scaling applied."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (rope.theta**exponents)
    if rope.kind == "linear":
        return inv_freq / rope.factor
    if rope.kind == "llama3":
        # Llama 3.1+: long wavelengths slowed by ``factor``, short ones kept, a smooth blend between
        low_wavelen = rope.original_max_position_embeddings / rope.low_freq_factor
        high_wavelen = rope.original_max_position_embeddings / rope.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
        smooth = (rope.original_max_position_embeddings / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor
        )
        blended = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, blended, scaled)
    return inv_freq


def rope_tables(
    positions: torch.Tensor, head_dim: int, rope: RopeConfig | float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (len(positions), head_dim) for rotate-half RoPE, computed in float32.
    ``rope``: the RoPE settings, or a bare base frequency (no scaling)."""
    settings = rope if isinstance(rope, RopeConfig) else RopeConfig(theta=float(rope))
    inv_freq = inverse_frequencies(settings, head_dim, positions.device)
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
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.head_dim
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.causal, self.window = config.causal, config.sliding_window
        self.q = nn.Linear(config.hidden_size, self.heads * d, bias=config.qkv_bias)
        self.k = nn.Linear(config.hidden_size, self.kv_heads * d, bias=config.qkv_bias)
        self.v = nn.Linear(config.hidden_size, self.kv_heads * d, bias=config.qkv_bias)
        self.o = nn.Linear(self.heads * d, config.hidden_size, bias=config.o_bias)
        self.q_norm = RMSNorm(d, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(d, config.rms_norm_eps) if config.qk_norm else None

    def forward(self, x: torch.Tensor, batch: Batch, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Every token's output, or with ``keep`` (a boolean mask over the leading shape) only the kept tokens'
        (n, hidden), in order: every token is still a key and a value, only the output projection is spared."""
        lead = x.shape[:-1]  # (B, L) padded or (T,) packed
        q = self.q(x).view(*lead, self.heads, self.head_dim)
        k = self.k(x).view(*lead, self.kv_heads, self.head_dim)
        v = self.v(x).view(*lead, self.kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = batch.cos.unsqueeze(-2), batch.sin.unsqueeze(-2)  # broadcast over heads
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if batch.packed:
            assert batch.cu_seqlens is not None
            if batch.backend == "flash":
                out = flash_attention(
                    q, k, v, batch.cu_seqlens, batch.max_seqlen, causal=self.causal, window=self.window
                )
            else:
                out = varlen_attention(q, k, v, batch.cu_seqlens, causal=self.causal, window=self.window)
        else:
            assert batch.key_mask is not None
            attend = eager_attention if batch.backend == "eager" else sdpa_attention
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, d)
            out = attend(q, k, v, batch.key_mask, causal=self.causal, window=self.window).transpose(1, 2)
        out = out.reshape(*lead, self.heads * self.head_dim)
        projected: torch.Tensor = self.o(out if keep is None else out[keep])
        return projected


class SwiGLU(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        bias = config.mlp_bias
        self.gate = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down(F.silu(self.gate(x)) * self.up(x))
        return out


class Layer(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = SelfAttention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, batch: Batch, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output for every token, or with ``keep`` for the kept tokens only: (n, hidden)."""
        attended = self.attn(self.attn_norm(x), batch, keep)
        x = (x if keep is None else x[keep]) + attended
        out: torch.Tensor = x + self.mlp(self.mlp_norm(x))
        return out


class Decoder(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, ids: torch.Tensor, batch: Batch, keep: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, L) padded or (T,) packed → final (normed) hidden states of the same leading shape; with
        ``keep`` (a boolean mask of that shape) only the kept tokens' states, (n, hidden) in order. Nothing
        after the last layer's attention mixes tokens, so its output projection, MLP and the final norm run on
        the kept tokens only: what pooling reads (one token a sequence for last-token pooling, a query's text
        without its instruction for NV-Embed's mean), the same states as computed for every token."""
        x: torch.Tensor = self.embed(ids).to(batch.cos.dtype)  # a narrow table beside widened weights: widened
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, batch, keep if i == last else None)
        out: torch.Tensor = self.norm(x)
        return out

    def padded_batch(self, attention_mask: torch.Tensor, backend: Backend, dtype: torch.dtype) -> Batch:
        """The Batch for a right-padded (B, L) input: positions 0..L-1 on every row."""
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope, dtype)
        return Batch(backend=backend, cos=cos, sin=sin, key_mask=attention_mask)

    def packed_batch(self, real: torch.Tensor, backend: Backend, dtype: torch.dtype) -> tuple[Batch, torch.Tensor]:
        """The Batch for the real tokens of a right-padded (B, L) boolean mask, and the lengths (B,)."""
        lengths = real.sum(dim=1)
        positions = (real.cumsum(dim=1) - 1)[real]  # each token's position in its own sequence
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0))
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope, dtype)
        max_seqlen = int(lengths.max().item())
        return Batch(backend=backend, cos=cos, sin=sin, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen), lengths
