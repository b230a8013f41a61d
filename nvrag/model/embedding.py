"""A decoder embedding model: the backbone's final hidden states, pooled (model/pooling.py).

Unnormalised float32 vectors come out: the embedder cuts Matryoshka dimensions and normalises after.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nvrag.model.attention import PACKED_BACKENDS, Backend
from nvrag.model.decoder import Decoder
from nvrag.model.decoder_config import DecoderConfig
from nvrag.model.pooling import PoolingSpec, pool_packed, pool_padded


class DecoderEmbeddingModel(nn.Module):
    def __init__(self, config: DecoderConfig, pooling: PoolingSpec) -> None:
        super().__init__()
        self.config = config
        self.pooling = pooling
        self.backbone = Decoder(config)

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
    ) -> torch.Tensor:
        """Right-padded input_ids, attention_mask, pool_mask (B, L) → float32 pooled vectors (B, hidden)."""
        return self.pooled(input_ids, attention_mask, pool_mask, backend)

    def pooled(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor,
        backend: Backend,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The backbone's final states (through ``transform``, a layer applied to every token's state, such as
        NV-Embed's latent attention), pooled; on the padded or the packed path as ``backend`` says."""
        if backend in PACKED_BACKENDS:
            real = attention_mask.bool()
            batch, _ = self.backbone.packed_batch(real, backend, self.dtype)
            hidden = self.backbone(input_ids[real], batch)  # (T, H)
            hidden = transform(hidden) if transform is not None else hidden
            assert batch.cu_seqlens is not None
            return pool_packed(hidden, pool_mask[real], batch.cu_seqlens, self.pooling.kind)
        batch = self.backbone.padded_batch(attention_mask, backend, self.dtype)
        hidden = self.backbone(input_ids, batch)  # (B, L, H)
        hidden = transform(hidden) if transform is not None else hidden
        return pool_padded(hidden, pool_mask, attention_mask.sum(dim=1), self.pooling.kind)
