"""The Embedder interface: texts in, float32 L2-normalised vectors out, in input order.

A concrete embedder supplies three things: ``tokenize`` (texts → model input ids, truncated to the model's
limit), ``forward`` (one batch of ids → vectors) and ``token_spans`` (for the chunker). The base supplies the
rest: the query/document split, length-sorted batching under a token budget, restoring input order and
normalisation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nvrag.errors import InstructionError

FloatArray = npt.NDArray[np.float32]


def token_budget_batches(lengths: Sequence[int], budget: int, max_rows: int, min_fill: float = 0.75) -> list[list[int]]:
    """Group indices into batches whose padded size (rows x longest row) stays within ``budget`` tokens.

    Longest first, so a batch's padded width is its first member's length and is known before the batch is
    filled. A batch also closes when the next row is shorter than ``min_fill`` x its width, so padding stays
    under 1/min_fill - 1 of the real tokens (33% at 0.75) however mixed the lengths are. Callers restore input
    order by writing each batch's results back to its indices. A row longer than the budget gets its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        width = width or lengths[i]
        full = (len(current) + 1) * width > budget or len(current) >= max_rows
        if current and (full or lengths[i] < min_fill * width):
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class ModelInfo:
    """What an index needs to remember about the model that embedded it."""

    name: str
    revision: str
    dimension: int
    max_tokens: int  # the model's limit per sequence, special tokens included
    query_template: str  # prefix put before a query; "{instruction}" marks where the instruction goes
    document_template: str  # prefix put before a document
    license: str
    default_instruction: str | None = None
    compute_dtype: str = "float32"  # what the forward pass computes in: float32, bfloat16 or float16
    source: str = ""  # the checkpoint folder the weights came from ("" for bundled models)
    matryoshka: bool = False  # trained so that a vector's leading dimensions are an embedding too

    @property
    def takes_instructions(self) -> bool:
        return "{instruction}" in self.query_template


class Embedder(ABC):
    """Base of every embedding model. Subclasses implement tokenize, forward and token_spans."""

    def __init__(self, info: ModelInfo, *, batch_tokens: int = 4096, max_batch_size: int = 256) -> None:
        # a text longer than the budget still runs, in a batch of its own (token_budget_batches)
        self.info = info
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.notes: tuple[str, ...] = ()  # lines worth showing the user about how it loaded (set by the loader)
        self.dtype_reason = ""  # why it computes in info.compute_dtype, in words (set by the loader)
        self.weight_bytes: int | None = None  # what its weights take once loaded (set by the loader; None: unknown)

    # -- what a model supplies -------------------------------------------------------------------

    @abstractmethod
    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        """Model input ids for ``prefix + text``, special tokens included, truncated to ``max_tokens``."""

    @abstractmethod
    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        """Vectors (len(batch), dimension) for one batch of token id lists; need not be normalised."""

    @abstractmethod
    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of ``text`` (no special tokens), for token-aware chunking."""

    @property
    def special_tokens(self) -> int:
        """How many tokens the model adds around a text (e.g. [CLS] and [SEP])."""
        return 2

    # -- what every model gets ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def computes(self) -> str:
        """``bfloat16 (the CPU computes it natively: ...)``: the dtype it computes in, and why."""
        dtype = self.info.compute_dtype
        return f"{dtype} ({self.dtype_reason})" if self.dtype_reason else dtype

    @property
    def dimension(self) -> int:
        return self.info.dimension

    @property
    def max_text_tokens(self) -> int:
        """The longest text, in tokens, that a document vector covers without truncation."""
        return self.info.max_tokens - self.special_tokens - self._prefix_tokens(self.info.document_template)

    def embed_documents(self, texts: Sequence[str]) -> FloatArray:
        """Embed passages (document mode)."""
        return self._embed(texts, self.info.document_template)

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> FloatArray:
        """Embed queries with an instruction (free text; see prompts.resolve_instruction for task presets).

        With no instruction the model's default applies. A model that takes no instructions ignores it.
        """
        return self._embed(texts, self.query_prefix(instruction))

    def embed_with_prefix(self, texts: Sequence[str], prefix: str) -> FloatArray:
        """Embed with a raw prefix, used as is (for NV-Embed, the reference's ``instruction`` argument)."""
        return self._embed(texts, prefix)

    def query_prefix(self, instruction: str | None, template: str | None = None) -> str:
        """The prompt before a query: ``template`` (the model's own, or the one an index recorded) with the
        instruction (or the model's default) where it says ``{instruction}``."""
        template = self.info.query_template if template is None else template
        if "{instruction}" not in template:
            return template
        chosen = instruction if instruction is not None else self.info.default_instruction
        if chosen is None or not chosen.strip():
            raise InstructionError(f"model {self.name} needs a query instruction; give a task or an instruction")
        return template.replace("{instruction}", chosen.strip())

    def _prefix_tokens(self, prefix: str) -> int:
        return len(self.token_spans(prefix)) if prefix else 0

    def embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        """The vectors of ``prefix + text`` for each text, and the model input tokens they took (special tokens
        included, after truncation): what an API bills as usage."""
        return self._embed_counted(texts, prefix)

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        """For a process that answers many requests, once warmed up: rebuild what pays back over many forward
        passes (on a CPU in bfloat16 or int8: matmul weights prepacked for its kernels, model/prepack.py and
        model/int8.py). A line saying what was done, or None. Requests may run meanwhile; while ``busy()`` says
        they are, the work waits (a while) between steps rather than compete with them for the cores."""
        return None

    def close(self) -> None:
        """Stop what serves this model (a scheduler's workers, once the work queued is done), so that the model
        can be freed when nothing refers to it: a model pool unloading it calls this. A plain model: nothing."""
        return None

    def replica_set(self) -> Sequence[Embedder]:
        """The copies of this model that can run forward passes at the same time (one per device); a scheduler
        drives each from its own thread. One model on one device: itself."""
        return (self,)

    def _embed(self, texts: Sequence[str], prefix: str) -> FloatArray:
        return self._embed_counted(texts, prefix)[0]

    def _embed_counted(self, texts: Sequence[str], prefix: str) -> tuple[FloatArray, int]:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out, 0
        ids = self.tokenize(texts, prefix)
        for batch in token_budget_batches([len(x) for x in ids], self.batch_tokens, self.max_batch_size):
            vectors = self.forward([ids[i] for i in batch], prefix)
            out[batch] = vectors
        return normalise(out), sum(len(x) for x in ids)


def normalise(vectors: FloatArray) -> FloatArray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero), float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalised
