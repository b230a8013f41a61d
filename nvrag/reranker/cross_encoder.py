"""Sequence-classification cross-encoders (BERT: the ms-marco MiniLM cross-encoders and others of its form;
XLM-RoBERTa and RoBERTa: bge-reranker-v2-m3's form), scored as sentence-transformers' CrossEncoder and the model cards'
transformers code score them.

Input: the checkpoint's tokenizer.json encodes the pair (BERT: ``[CLS] query [SEP] document [SEP]``, segment ids 0
then 1; RoBERTa: ``<s> query </s></s> document </s>``, one segment), truncated ``longest_first`` to the max length
(the longer of the two loses tokens first; an empty document keeps its separator). Score: the single logit, through
the activation config.json names (``sentence_transformers.activation_fn``, or sentence-transformers 3's
``sbert_ce_default_activation_function``): Identity, Sigmoid or Tanh. Where the config names none, the raw logit:
sentence-transformers would apply a sigmoid there, which keeps the order and changes only the scale
(docs/reranking.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from nvrag.embedder.base import FloatArray
from nvrag.embedder.dtypes import cpu_batch_width
from nvrag.embedder.runtime import convert_matmuls, prepack_weights
from nvrag.errors import CheckpointError, ConfigError
from nvrag.model.bert_config import BertConfig
from nvrag.model.cross_encoder import BertClassifier, load_bert_classifier, num_labels_of
from nvrag.reranker.base import Checkpoint, PairInput, Reranker
from nvrag.reranker.tokens import load_pair_tokenizer

ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.Identity": "identity",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.Tanh": "tanh",
}
SCORE_WORDS = {"identity": "the logit", "sigmoid": "sigmoid of the logit", "tanh": "tanh of the logit"}


def activation_of(config: dict[str, Any], where: str) -> str:
    """identity | sigmoid | tanh: what config.json names (identity where it names nothing)."""
    st = config.get("sentence_transformers")
    path = st.get("activation_fn") if isinstance(st, dict) else None
    path = path if path is not None else config.get("sbert_ce_default_activation_function")
    if path is None:
        return "identity"
    if path not in ACTIVATIONS:
        raise CheckpointError(
            f"{where}: the activation {str(path)[:100]!r} is not supported (nvrag applies Identity, Sigmoid or Tanh)"
        )
    return ACTIVATIONS[path]


class CrossEncoderReranker(Reranker):
    def __init__(self, source: Checkpoint) -> None:
        config, where = source.config, source.where
        self.bert = BertConfig.from_dict(config, where)
        self.model_type = str(config.get("model_type"))
        labels = num_labels_of(config, where)
        if labels != 1:
            raise CheckpointError(f"{where}: the classifier has {labels} labels; a reranker gives one score")
        self.activation = activation_of(config, where)
        self.tokenizer, limit = load_pair_tokenizer(source.folder)
        positions = self.bert.max_tokens
        max_tokens = source.max_length or min(limit or positions, positions)
        if not 4 <= max_tokens <= positions:
            raise ConfigError(f"max length {max_tokens} is outside 4..{positions} (the model's positions)")
        self.tokenizer.enable_truncation(max_tokens, strategy="longest_first")
        super().__init__(
            source.info("cross-encoder", max_tokens, SCORE_WORDS[self.activation]), batch_tokens=source.batch_tokens
        )
        self.folder, self.device, self.dtype = source.folder, torch.device(source.device), getattr(torch, source.dtype)
        self.pad_id = int(config.get("pad_token_id") or 0)
        self._model: BertClassifier | None = None
        self._lock = threading.Lock()
        self._packed = False  # weights prepacked (a server): batches keep their own width

    @property
    def model(self) -> BertClassifier:
        with self._lock:
            if self._model is None:
                model = load_bert_classifier(
                    self.folder, self.bert, 1, model_type=self.model_type, device=self.device, matmul_dtype=self.dtype
                )
                # bfloat16 weights with float32 arithmetic on a CPU without bfloat16 arithmetic (model/widened.py)
                convert_matmuls(model, str(self.dtype).removeprefix("torch."), self.device)
                self._model = model
            return self._model

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[PairInput]:
        encodings = self.tokenizer.encode_batch([(query, d) for d in documents])
        one_segment = self.bert.type_vocab_size == 1  # RoBERTa: every token in segment 0, as transformers feeds it
        return [
            PairInput(
                ids=e.ids, segments=[0] * len(e.ids) if one_segment else e.type_ids, truncated=bool(e.overflowing)
            )
            for e in encodings
        ]

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        """A server's bfloat16 CPU model: the encoder's matmul weights prepacked (model/prepack.py; the GELU
        stays fused), the same arithmetic. The pooler and classifier (one row each) stay as they are."""
        said = prepack_weights(self.name, self.model.encoder, self.device, self.dtype, busy)
        self._packed = said is not None
        return said

    def forward(self, batch: Sequence[PairInput]) -> FloatArray:
        width = max(len(p.ids) for p in batch)
        if self.device.type == "cpu" and not self._packed:
            width = cpu_batch_width(width, self.info.max_tokens)  # oneDNN keeps one kernel per width
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        segments = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, pair in enumerate(batch):
            n = len(pair.ids)
            ids[row, :n] = torch.tensor(pair.ids)
            segments[row, :n] = torch.tensor(pair.segments)
            mask[row, :n] = 1
        model = self.model
        with torch.inference_mode():
            logits = model(ids.to(self.device), mask.to(self.device), segments.to(self.device))[:, 0]
        if self.activation == "sigmoid":
            logits = torch.sigmoid(logits)
        elif self.activation == "tanh":
            logits = torch.tanh(logits)
        return np.asarray(logits.cpu().numpy(), dtype=np.float32)
