"""What the decoder rerankers share (the LLM rerankers, llm.py, and the bidirectional-Llama classifiers,
nemotron.py): the model loaded on first use, and a forward pass over right-padded pairs through the decoder
engine with a head on the pooled state (model/token_scorer.py)."""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch

from nvrag.embedder.base import FloatArray
from nvrag.embedder.dtypes import cpu_batch_width
from nvrag.embedder.runtime import (
    choose_backend,
    convert_matmuls,
    matmul_dtype,
    parse_dtype,
    prepack_weights,
    right_padded,
)
from nvrag.model.token_scorer import HeadScorer
from nvrag.reranker.base import Checkpoint, PairInput, Reranker, RerankerInfo


class DecoderReranker(Reranker):
    """A reranker whose model is a HeadScorer; subclasses load it and turn its logits into scores."""

    def __init__(self, source: Checkpoint, info: RerankerInfo) -> None:
        super().__init__(info, batch_tokens=source.batch_tokens)
        self.source = source
        self.device = torch.device(source.device)
        # a widened bfloat16 model (a CPU without bfloat16 arithmetic) computes in float32 (model/widened.py)
        self.dtype, self.matmul_dtype = parse_dtype(source.dtype, self.device), matmul_dtype(source.dtype, self.device)
        self.backend = choose_backend(source.attention, self.device, self.dtype)
        self._model: HeadScorer | None = None
        self._lock = threading.Lock()
        self._packed = False  # weights prepacked (a server): batches keep their own width

    @abstractmethod
    def load(self) -> HeadScorer:
        """The model, loaded from the checkpoint in ``self.dtype``, its layers' matmul weights in
        ``self.matmul_dtype``."""

    @abstractmethod
    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, rows) float32 logits → (B,) scores."""

    @property
    def model(self) -> HeadScorer:
        with self._lock:
            if self._model is None:
                model = self.load()
                convert_matmuls(model.backbone, self.source.dtype, self.device)
                self._model = model
            return self._model

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        """A server's bfloat16 CPU model: the decoder's matmul weights prepacked (model/prepack.py; the head is
        a few rows, computed in float32)."""
        said = prepack_weights(self.name, self.model.backbone, self.device, self.dtype, busy)
        self._packed = said is not None
        return said

    def forward(self, batch: Sequence[PairInput]) -> FloatArray:
        width = max(len(p.ids) for p in batch)
        if self.device.type == "cpu" and self.dtype == torch.bfloat16 and not self._packed:
            width = cpu_batch_width(width, self.info.max_tokens)  # oneDNN keeps one kernel per plain weight's width
        # padding is masked (attention and pooling), so any id pads; the head reads each row's own tokens
        input_ids, attention_mask, _ = right_padded([p.ids for p in batch], 0, 0, width)
        model = self.model
        with torch.inference_mode():
            logits = model.logits(input_ids.to(self.device), attention_mask.to(self.device), backend=self.backend)
        return np.asarray(self.scores(logits).cpu().numpy(), dtype=np.float32)
