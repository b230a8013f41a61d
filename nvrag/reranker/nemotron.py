"""Decoder sequence classifiers in the form of NVIDIA's Llama Nemotron rerankers (llama-nemotron-rerank-1b-v2):
a bidirectional Llama whose pooled final state goes through a one-logit ``score`` head.

What their remote code (``LlamaBidirectionalForSequenceClassification``) computes, read from the checkpoint's
config: the pair as one text, ``question:{query} \\n \\n passage:{document}`` (the model card's template),
tokenised with the tokenizer's own special tokens (Llama 3's ``<|begin_of_text|>``) and cut from the end (the
document goes first) to the max length; bidirectional attention; ``pooling`` ``avg`` (the mean over real
tokens, the default), ``cls`` or ``last``; the ``score`` logit divided by ``temperature``. The score is that
logit. A query that leaves no room for any of the document is refused, as for the LLM rerankers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nvrag.errors import CheckpointError, ConfigError, InputError
from nvrag.model.cross_encoder import num_labels_of
from nvrag.model.decoder_config import decoder_config_from_hf
from nvrag.model.loading import load_head_scorer
from nvrag.model.pooling import PoolingSpec
from nvrag.model.token_scorer import HeadScorer
from nvrag.reranker.base import Checkpoint, PairInput
from nvrag.reranker.decoder_base import DecoderReranker
from nvrag.reranker.tokens import load_pair_tokenizer, truncation_side

POOLING = {"avg": "mean", "mean": "mean", "cls": "cls", "last": "last"}
DEFAULT_MAX_TOKENS = 8192


def format_pair(query: str, document: str) -> str:
    return f"question:{query} \n \n passage:{document}"


class BidirectionalClassifierReranker(DecoderReranker):
    def __init__(self, source: Checkpoint) -> None:
        config, where = source.config, source.where
        self.decoder = decoder_config_from_hf(config | {"model_type": "llama"}, causal=False)
        pooling = POOLING.get(str(config.get("pooling", "avg")))
        if pooling is None:
            raise CheckpointError(f"{where}: pooling {config.get('pooling')!r} is not one of avg, cls, last")
        self.pooling = PoolingSpec(kind=pooling)  # type: ignore[arg-type]  # one of POOLING's values
        temperature = config.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
            raise CheckpointError(f"{where}: temperature {temperature!r} must be a positive number")
        self.temperature = float(temperature)
        labels = num_labels_of(config, where)
        if labels != 1:
            raise CheckpointError(f"{where}: the classifier has {labels} labels; a reranker gives one score")
        self.tokenizer, limit = load_pair_tokenizer(source.folder)
        positions = int(config.get("max_position_embeddings") or DEFAULT_MAX_TOKENS)
        max_tokens = source.max_length or min(limit or positions, positions, DEFAULT_MAX_TOKENS)
        if not 8 <= max_tokens <= positions:
            raise ConfigError(f"max length {max_tokens} is outside 8..{positions} (the model's positions)")
        side = truncation_side(source.folder)
        self.tokenizer.enable_truncation(max_tokens, strategy="longest_first", direction=side)
        score = "the logit" if self.temperature == 1.0 else f"the logit / {self.temperature:g}"
        super().__init__(source, source.info("cross-encoder", max_tokens, score))

    def load(self) -> HeadScorer:
        return load_head_scorer(
            self.source.folder, self.decoder, self.pooling, 1, temperature=self.temperature, dtype=self.dtype,
            device=self.device, matmul_dtype=self.matmul_dtype,
        )  # fmt: skip

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0]

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[PairInput]:
        if self.tokenizer.encode(format_pair(query, "")).overflowing:
            raise InputError(
                f"the query takes over {self.info.max_tokens} tokens, leaving no room for a document; shorten it "
                "or raise --max-length"
            )
        encodings = self.tokenizer.encode_batch([format_pair(query, d) for d in documents])
        return [PairInput(ids=e.ids, truncated=bool(e.overflowing)) for e in encodings]
