"""A decoder embedding model: the backbone's final hidden states, pooled (model/pooling.py).

Unnormalised float32 vectors come out: the embedder cuts Matryoshka dimensions and normalises after.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.attention import PACKED_BACKENDS, Backend
from nvrag.model.decoder import Decoder
from nvrag.model.decoder_config import DecoderConfig
from nvrag.model.pooling import PoolingSpec, kept_tokens, pool_packed, pool_padded


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
        """The backbone's final states (through ``transform``, a layer applied to each token's state on its own,
        such as NV-Embed's latent attention), pooled; on the padded or the packed path as ``backend`` says.
        Before a mean, ``transform`` sees only the tokens the mean keeps (``kept_tokens``)."""
        kind = self.pooling.kind
        if backend in PACKED_BACKENDS:
            real = attention_mask.bool()
            batch, _ = self.backbone.packed_batch(real, backend, self.dtype)
            hidden = self.backbone(input_ids[real], batch)  # (T, H)
            assert batch.cu_seqlens is not None
            return self._transformed_pool(hidden, pool_mask[real], batch.cu_seqlens, transform)
        batch = self.backbone.padded_batch(attention_mask, backend, self.dtype)
        hidden = self.backbone(input_ids, batch)  # (B, L, H)
        lengths = attention_mask.sum(dim=1)
        if transform is not None and kind == "mean":  # to the packed form: only real tokens go on
            real = attention_mask.bool()
            cu_seqlens = F.pad(lengths.cumsum(0), (1, 0))
            return self._transformed_pool(hidden[real], pool_mask[real], cu_seqlens, transform)
        hidden = transform(hidden) if transform is not None else hidden
        return pool_padded(hidden, pool_mask, lengths, kind)

    def _transformed_pool(
        self,
        hidden: torch.Tensor,
        pool_weights: torch.Tensor,
        cu_seqlens: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """Packed tokens (T, H) through ``transform`` (for a mean, only those it keeps), pooled: (B, H)."""
        if transform is not None and self.pooling.kind == "mean":
            hidden, pool_weights, cu_seqlens = kept_tokens(hidden, pool_weights, cu_seqlens)
        hidden = transform(hidden) if transform is not None else hidden
        return pool_packed(hidden, pool_weights, cu_seqlens, self.pooling.kind)
