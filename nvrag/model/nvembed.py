"""NV-Embed-v2: bidirectional Mistral → latent-attention pooling → masked mean → L2 normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.attention import PACKED_BACKENDS, Backend
from nvrag.model.config import NVEmbedConfig
from nvrag.model.latent import LatentPooling
from nvrag.model.mistral import Batch, BidirectionalMistral, rope_tables


class NVEmbedModel(nn.Module):
    def __init__(self, config: NVEmbedConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = BidirectionalMistral(config.text)
        self.pool = LatentPooling(config.latent)

    def prepare(self) -> NVEmbedModel:
        """Precompute what depends only on the weights. Call after loading or changing weights."""
        self.pool.prepare()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.embed.weight.device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor,
        *,
        backend: Backend = "sdpa",
        folded: bool = False,
    ) -> torch.Tensor:
        """Right-padded input_ids, attention_mask, pool_mask (B, L) → float32 embeddings (B, hidden).

        A row whose pool_mask is all zero divides 0 by 0 (NaN), as the reference does; callers check first.
        """
        if backend in PACKED_BACKENDS:
            return self._forward_packed(input_ids, attention_mask, pool_mask, backend, folded)
        t = self.config.text
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)  # right padding: 0..L-1 on every row
        cos, sin = rope_tables(positions, t.head_dim, t.rope_theta, self.dtype)
        batch = Batch(backend=backend, cos=cos, sin=sin, key_mask=attention_mask)
        hidden = self.pool(self.backbone(input_ids, batch), folded=folded)  # (B, L, H)
        weights = pool_mask.to(torch.float32).unsqueeze(-1)  # (B, L, 1)
        summed = (hidden.float() * weights).sum(dim=1)
        return self._normalise(summed / weights.sum(dim=1))

    def _forward_packed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor,
        backend: Backend,
        folded: bool,
    ) -> torch.Tensor:
        t = self.config.text
        real = attention_mask.bool()
        lengths = real.sum(dim=1)  # (B,)
        ids = input_ids[real]  # (T,)
        positions = (real.cumsum(dim=1) - 1)[real]  # position of each token in its own sequence
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0))  # (B+1,)
        cos, sin = rope_tables(positions, t.head_dim, t.rope_theta, self.dtype)
        batch = Batch(backend=backend, cos=cos, sin=sin, cu_seqlens=cu_seqlens, max_seqlen=int(lengths.max().item()))
        hidden = self.pool(self.backbone(ids, batch), folded=folded)  # (T, H)
        weights = pool_mask[real].to(torch.float32)  # (T,)
        segment = torch.repeat_interleave(torch.arange(len(lengths), device=ids.device), lengths)
        summed = torch.zeros(len(lengths), hidden.shape[-1], dtype=torch.float32, device=ids.device)
        summed.index_add_(0, segment, hidden.float() * weights[:, None])
        counts = torch.zeros(len(lengths), dtype=torch.float32, device=ids.device).index_add_(0, segment, weights)
        return self._normalise(summed / counts[:, None])

    def _normalise(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, p=2, dim=-1) if self.config.latent.output_normalize else embeddings
