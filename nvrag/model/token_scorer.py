"""A causal language model's logits for a few chosen tokens at each sequence's last position: the LLM
rerankers' model (Qwen3-Reranker: the logits of "no" and "yes" after the prompt's assistant turn).

The decoder engine (model/decoder.py) runs the sequence; the last real token's final state (last-token pooling,
model/pooling.py) meets only the language-model head's rows for the chosen tokens, so the vocabulary-wide
projection (151,669 x 1,024 for Qwen3-Reranker-0.6B) is neither loaded nor computed. The rows come from
``lm_head.weight``, or from the input embeddings where the model ties them. Logits come out in float32.
"""

from __future__ import annotations

import torch

from nvrag.model.attention import Backend
from nvrag.model.decoder_config import DecoderConfig
from nvrag.model.embedding import DecoderEmbeddingModel
from nvrag.model.pooling import PoolingSpec


class TokenScorer(DecoderEmbeddingModel):
    """Right-padded ids (B, L) and mask → (B, len(token_ids)) float32 logits at each row's last real token."""

    head: torch.Tensor  # (n, hidden): the language-model head's rows for the chosen tokens

    def __init__(self, config: DecoderConfig, token_ids: tuple[int, ...]) -> None:
        super().__init__(config, PoolingSpec(kind="last"))
        self.token_ids = token_ids
        # a buffer the loader assigns (not a parameter: the name map covers the backbone only)
        self.register_buffer("head", torch.empty(len(token_ids), config.hidden_size), persistent=False)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, backend: Backend) -> torch.Tensor:
        last = self.pooled(input_ids, attention_mask, attention_mask, backend)  # (B, hidden) float32
        return last @ self.head.float().T
