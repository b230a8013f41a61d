"""NV-Embed's latent-attention pooling: token states attend to a learned dictionary of latents.

The token states are the queries; the latents are the keys and values (NVEMBED.md). Because the latents are
weights, their keys and values are the same for every input: ``prepare`` computes them once per loaded model.
``folded`` goes further and multiplies the projections into two (hidden x heads*latents) matrices, exactly
equal in exact arithmetic, cheaper per token; the plain path stays as the reference and tests compare them.
A model that will only run folded can then ``release_projections``: the projections the folded matrices were
made from (NV-Embed-v2: 1 GiB of the 1.4 GiB layer) leave memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.config import LatentConfig
from nvrag.model.prepack import drop_pages, file_backed, file_mappings
from nvrag.model.widened import wide_product


class LatentPooling(nn.Module):
    def __init__(self, config: LatentConfig) -> None:
        super().__init__()
        self.config = config
        heads, d, width = config.num_cross_heads, config.cross_dim_head, config.latent_dim
        inner = heads * d
        self.latents = nn.Parameter(torch.zeros(config.num_latents_value, width))
        self.token_norm = nn.LayerNorm(width)  # checkpoint: cross_attend_blocks.0.norm (acts on token states)
        self.latent_norm = nn.LayerNorm(config.hidden_dim)  # checkpoint: ...0.norm_context (acts on latents)
        self.to_q = nn.Linear(width, inner, bias=False)
        self.to_kv = nn.Linear(config.hidden_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, width, bias=False)
        self.ff_norm = nn.LayerNorm(width)
        self.ff_in = nn.Linear(width, 8 * width)  # GEGLU: first half value, second half gate
        self.ff_out = nn.Linear(4 * width, width)
        self._kv: tuple[torch.Tensor, torch.Tensor] | None = None
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None
        self.released = False  # release_projections(): only the folded path can run

    def latent_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the latents, each (heads, num_latents, d). First half of to_kv is K."""
        if self.released:
            raise RuntimeError("this latent layer keeps only its folded matrices: run it with folded=True")
        heads, d = self.config.num_cross_heads, self.config.cross_dim_head
        latents = self.latent_norm(self.latents)
        weight = self.to_kv.weight
        # bfloat16 weights beside float32 latents (model/widened.py): their product in float32, a block at a time
        kv = self.to_kv(latents) if weight.dtype == latents.dtype else wide_product(latents, weight)  # (n, 2hd)
        k, v = kv.chunk(2, dim=-1)
        n = self.latents.shape[0]
        return k.view(n, heads, d).transpose(0, 1), v.view(n, heads, d).transpose(0, 1)

    def folded_weights(self, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) with scores = LN(x) @ A (already scaled by 1/sqrt(d)) and output = softmax_h(scores) @ B.

        Per head h: Q_h K_hᵀ = LN(x) (W_q,hᵀ K_hᵀ) and P_h V_h W_out,hᵀ = P_h (V_h W_out,hᵀ). ``kv``: the
        latents' keys and values, if already computed. Products accumulate in float32 and are rounded once to the
        weights' dtype: computed in float32, except for bfloat16 weights, whose products are exact in float32
        and whose matmuls accumulate in float32 on every backend (4x faster on a CPU with bf16 dot products,
        and no float32 copy of the projections: NV-Embed-v2's are 2 x 512 MiB in float32)."""
        heads, d = self.config.num_cross_heads, self.config.cross_dim_head
        dtype = self.latents.dtype
        compute = dtype if dtype == torch.bfloat16 else torch.float32
        k, v = (t.to(compute) for t in (kv or self.latent_kv()))  # (h, n, d)
        # per head, each projection's slice in the compute dtype: bfloat16 projections of a float32 model
        # (model/widened.py) are never widened whole (NV-Embed-v2's: 2 x 512 MiB in float32)
        w_q = self.to_q.weight.view(heads, d, -1)  # (h, d, width)
        w_out = self.to_out.weight  # (width, h * d)
        a = torch.empty(w_q.shape[-1], heads, k.shape[1], dtype=compute, device=k.device)  # (width, h, n)
        for h in range(heads):
            a[:, h] = w_q[h].to(compute).t() @ k[h].t()
        a /= d**0.5
        # (h, n, width): V_h W_out,hᵀ per head, W_out,h a column slice (a strided einsum is 4x slower)
        b = torch.stack([F.linear(v[h], w_out[:, h * d : (h + 1) * d].to(compute)) for h in range(heads)])
        return a.reshape(a.shape[0], -1).to(dtype), b.reshape(-1, b.shape[-1]).to(dtype)

    def prepare(self) -> None:
        """Compute the constant latent keys/values (and the folded matrices) once, after weights are loaded."""
        with torch.inference_mode():
            self._kv = self.latent_kv()
            self._folded = self.folded_weights(self._kv)

    def release_projections(self) -> None:
        """After ``prepare``, for a model that runs only folded: drop the query, key/value and output projections
        and the latents' keys and values (what the folded matrices were made from), and this process's copy of
        their pages where they are views of a mapped checkpoint (the file keeps them). The plain path then
        refuses to run."""
        if self._folded is None:
            raise RuntimeError("prepare() the latent layer before releasing its projections")
        maps = file_mappings()
        for layer in (self.to_q, self.to_kv, self.to_out):
            weight = layer.weight
            layer.weight = nn.Parameter(weight.new_empty((0, weight.shape[1])), requires_grad=False)
            if weight.device.type == "cpu" and file_backed(weight, maps):
                drop_pages(weight)
        self._kv = None
        self.released = True

    def forward(self, hidden: torch.Tensor, *, folded: bool = False) -> torch.Tensor:
        """hidden (..., width) → (..., width): cross-attention to the latents, then a GEGLU feed-forward."""
        x = self.token_norm(hidden)
        if folded:
            a, b = self._folded if self._folded is not None else self.folded_weights()
            heads, n = self.config.num_cross_heads, self.config.num_latents_value
            scores = (x @ a).unflatten(-1, (heads, n))  # (..., h, n)
            probs = torch.softmax(scores, dim=-1).flatten(-2)  # (..., h * n)
            attended = probs @ b  # (..., width)
        else:
            k, v = self._kv if self._kv is not None else self.latent_kv()
            heads, d = self.config.num_cross_heads, self.config.cross_dim_head
            q = self.to_q(x).unflatten(-1, (heads, d)).movedim(-2, -3)  # (..., h, tokens, d)
            shape = (*q.shape[:-2], k.shape[-2], d)
            out = F.scaled_dot_product_attention(q, k.expand(shape), v.expand(shape))  # (..., h, tokens, d)
            attended = self.to_out(out.movedim(-3, -2).flatten(-2))
        hs1 = attended + hidden  # the residual takes the un-normalised states
        value, gate = self.ff_in(self.ff_norm(hs1)).chunk(2, dim=-1)
        result: torch.Tensor = self.ff_out(value * F.gelu(gate)) + hs1  # exact erf GELU, not tanh
        return result
