"""A decoder embedding model: the backbone's final hidden states, pooled (model/pooling.py).

Unnormalised float32 vectors come out: the embedder cuts Matryoshka dimensions and normalises after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nvrag.model.attention import PACKED_BACKENDS, Backend
from nvrag.model.decoder import Decoder, Layer
from nvrag.model.decoder_config import DecoderConfig
from nvrag.model.pooling import PoolingSpec, kept_bounds, pool_packed, read_tokens


class DecoderEmbeddingModel(nn.Module):
    def __init__(self, config: DecoderConfig, pooling: PoolingSpec) -> None:
        super().__init__()
        self.config = config
        self.pooling = pooling
        self.backbone = Decoder(config)

    @property
    def dtype(self) -> torch.dtype:
        """What the model computes in: its norms' dtype (the token embeddings may be narrower, model/widened.py)."""
        first = cast(Layer, self.backbone.layers[0])
        return first.attn_norm.weight.dtype

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
        The backbone finishes, and ``transform`` sees, only the tokens the pooling reads (``read_tokens``)."""
        kind = self.pooling.kind
        real = attention_mask.bool()
        lengths = real.sum(dim=1)
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0))
        weights = pool_mask[real]  # (T,) the real tokens' pool weights, in packed order
        keep = read_tokens(kind, weights, cu_seqlens)
        if not bool(keep.any()):  # a mean over no token anywhere (all prompt): zero vectors, as before
            keep = torch.ones_like(keep)
        if backend in PACKED_BACKENDS:
            batch, _ = self.backbone.packed_batch(real, backend, self.dtype)
            hidden = self.backbone(input_ids[real], batch, keep)  # (n, H): the kept tokens, in packed order
        else:
            padded_keep = torch.zeros_like(real)
            padded_keep[real] = keep
            hidden = self.backbone(
                input_ids, self.backbone.padded_batch(attention_mask, backend, self.dtype), padded_keep
            )
        hidden = transform(hidden) if transform is not None else hidden
        return pool_packed(hidden, weights[keep], kept_bounds(keep, cu_seqlens), kind)
