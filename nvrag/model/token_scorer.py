"""A decoder with a linear head on its pooled state: the decoder rerankers' model.

- LLM rerankers (Qwen3-Reranker): the last real token's final state meets only the language-model head's rows
  for a few chosen tokens ("no" and "yes"), so the vocabulary-wide projection (151,669 x 1,024 for
  Qwen3-Reranker-0.6B) is neither loaded nor computed. The rows come from ``lm_head.weight``, or from the input
  embeddings where the model ties them (``TokenScorer``).
- Decoder sequence classifiers (NVIDIA's bidirectional-Llama rerankers): the pooled state (mean, CLS or last,
  as the checkpoint's config says) through the ``score`` head, divided by the config's temperature.

The decoder engine (model/decoder.py) runs the sequence; pooling is model/pooling.py's. Logits come out in
float32.
"""

from __future__ import annotations

import torch

from nvrag.model.attention import Backend
from nvrag.model.decoder_config import DecoderConfig
from nvrag.model.embedding import DecoderEmbeddingModel
from nvrag.model.pooling import PoolingSpec


class HeadScorer(DecoderEmbeddingModel):
    """Right-padded ids (B, L) and mask → (B, rows) float32 logits of the head on the pooled state."""

    head: torch.Tensor  # (rows, hidden)

    def __init__(self, config: DecoderConfig, pooling: PoolingSpec, rows: int, temperature: float = 1.0) -> None:
        super().__init__(config, pooling)
        self.temperature = temperature
        # a buffer the loader assigns (not a parameter: the name map covers the backbone only)
        self.register_buffer("head", torch.empty(rows, config.hidden_size), persistent=False)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, backend: Backend) -> torch.Tensor:
        pooled = self.pooled(input_ids, attention_mask, attention_mask, backend)  # (B, hidden) float32
        return (pooled @ self.head.float().T) / self.temperature


class TokenScorer(HeadScorer):
    """The logits of ``token_ids`` at each row's last real token."""

    def __init__(self, config: DecoderConfig, token_ids: tuple[int, ...]) -> None:
        super().__init__(config, PoolingSpec(kind="last"), len(token_ids))
        self.token_ids = token_ids
