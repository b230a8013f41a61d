"""NV-Embed-v2: bidirectional Mistral → latent-attention pooling → masked mean → L2 normalisation.

The decoder is model/decoder.py's, configured bidirectional (``NVEmbedConfig.text``); the mean is
model/pooling.py's, over the pool mask (the instruction's tokens left out, NVEMBED.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.attention import PACKED_BACKENDS, Backend
from nvrag.model.config import NVEmbedConfig
from nvrag.model.decoder import Decoder
from nvrag.model.latent import LatentPooling
from nvrag.model.pooling import pool_packed, pool_padded


class NVEmbedModel(nn.Module):
    def __init__(self, config: NVEmbedConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Decoder(config.text)
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
            real = attention_mask.bool()
            batch, _ = self.backbone.packed_batch(real, backend, self.dtype)
            hidden = self.pool(self.backbone(input_ids[real], batch), folded=folded)  # (T, H)
            assert batch.cu_seqlens is not None
            return self._normalise(pool_packed(hidden, pool_mask[real], batch.cu_seqlens, "mean"))
        batch = self.backbone.padded_batch(attention_mask, backend, self.dtype)
        hidden = self.pool(self.backbone(input_ids, batch), folded=folded)  # (B, L, H)
        return self._normalise(pool_padded(hidden, pool_mask, attention_mask.sum(dim=1), "mean"))

    def _normalise(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, p=2, dim=-1) if self.config.latent.output_normalize else embeddings
