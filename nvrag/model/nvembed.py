"""NV-Embed-v2: bidirectional Mistral → latent-attention pooling → masked mean → L2 normalisation.

One configuration of the decoder embedding model (model/embedding.py): its decoder configured bidirectional
(``NVEmbedConfig.text``), the latent-attention layer applied to every token's state, then the mean over the pool
mask (the instruction's tokens left out, NVEMBED.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.attention import Backend
from nvrag.model.config import NVEmbedConfig
from nvrag.model.decoder import Decoder
from nvrag.model.embedding import DecoderEmbeddingModel
from nvrag.model.latent import LatentPooling
from nvrag.model.pooling import PoolingSpec


class NVEmbedModel(DecoderEmbeddingModel):
    def __init__(self, config: NVEmbedConfig) -> None:
        nn.Module.__init__(self)
        self.config = config.text  # the decoder's, as for every decoder embedding model
        self.nvembed = config
        self.pooling = PoolingSpec(kind="mean")
        self.backbone = Decoder(config.text)
        self.pool = LatentPooling(config.latent)

    def prepare(self) -> NVEmbedModel:
        """Precompute what depends only on the weights. Call after loading or changing weights."""
        self.pool.prepare()
        return self

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

        A row whose pool_mask is all zero pools to zero, where the reference gives NaN (0/0); callers check first.
        """
        pooled = self.pooled(input_ids, attention_mask, pool_mask, backend, lambda h: self.pool(h, folded=folded))
        return F.normalize(pooled, p=2, dim=-1) if self.nvembed.latent.output_normalize else pooled
