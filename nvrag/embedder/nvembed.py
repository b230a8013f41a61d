"""The NV-Embed-v2 embedder: the reference's exact input building around our native model.

Per text: ``instruction + text + "</s>"``, tokenised with the checkpoint's own tokenizer (BOS added), truncated
to ``max_length`` ids counting BOS (a truncated text loses its EOS, as in the reference), right-padded with EOS.
The pool mask is the attention mask with its first ``instruction_lens`` positions zeroed, where
``instruction_lens`` counts the instruction's tokens alone, without BOS: the reference's off-by-one, kept
(NVEMBED.md, "the BOS shift").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from nvrag.embedder.base import Embedder, FloatArray, ModelInfo
from nvrag.embedder.dtypes import cpu_batch_width
from nvrag.embedder.names import DEFAULT_MAX_LENGTH, NVEMBED_LICENSE, NVEMBED_NAME
from nvrag.embedder.prompts import DEFAULT_QUERY_INSTRUCTION, NVEMBED_QUERY_TEMPLATE
from nvrag.embedder.runtime import (
    choose_backend,
    convert_matmuls,
    dtype_label,
    is_int8,
    matmul_dtype,
    parse_dtype,
    prepack_weights,
    right_padded,
)
from nvrag.embedder.weights import weights_fingerprint
from nvrag.errors import CheckpointError, ConfigError, Hint, InstructionError
from nvrag.model import NVEmbedModel, load_model, read_config

EOS = "</s>"
EOS_ID = 2
# instructions are client input on a server: remember the token counts of the most recent ones only
INSTRUCTION_CACHE_SIZE = 256


def _pad_width(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch to ``width`` with EOS, masked out of attention and pooling (dtypes.cpu_batch_width)."""
    extra = width - input_ids.shape[1]
    if extra <= 0:
        return input_ids, attention_mask, pool_mask
    return (
        torch.nn.functional.pad(input_ids, (0, extra), value=EOS_ID),
        torch.nn.functional.pad(attention_mask, (0, extra), value=0),
        torch.nn.functional.pad(pool_mask, (0, extra), value=0),
    )


class NVEmbedEmbedder(Embedder):
    """NV-Embed-v2 (or any checkpoint in its format) from a local folder."""

    def __init__(
        self,
        folder: Path,
        *,
        device: str = "cpu",
        dtype: str | None = None,
        max_length: int | None = None,
        batch_tokens: int = 4096,
        attention: str = "auto",
        folded: bool = True,
    ) -> None:
        config = read_config(folder)  # fails early, with a clear message, on a folder that is not NV-Embed
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise CheckpointError(f"{folder}: no tokenizer.json (the checkpoint's own tokenizer is required)")
        torch_device = torch.device(device)
        torch_dtype = parse_dtype(dtype, torch_device)
        max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        if max_length < 2:
            raise ConfigError(f"max length must be at least 2 tokens (BOS and EOS), got {max_length}")
        info = ModelInfo(
            name=NVEMBED_NAME,
            revision=weights_fingerprint(folder),
            dimension=config.latent.latent_dim,
            max_tokens=max_length,
            query_template=NVEMBED_QUERY_TEMPLATE,
            document_template="",
            license=NVEMBED_LICENSE,
            default_instruction=DEFAULT_QUERY_INSTRUCTION,
            compute_dtype=dtype_label(dtype, torch_dtype),
            source=str(folder.resolve()),
        )
        super().__init__(info, batch_tokens=batch_tokens)
        self.int8 = is_int8(dtype)  # matmul weights in int8 (model/int8.py), the rest in torch_dtype
        self.requested_dtype = dtype  # int8, widened bfloat16: the layers' matmul weights (runtime.matmul_dtype)
        self.folder = folder
        self.device = torch_device
        self.dtype = torch_dtype
        self.backend = choose_backend(attention, self.device, self.dtype)
        self.folded = folded
        # The reference sets pad = EOS and right padding itself; we pad by hand, so the tokenizer does neither.
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._instruction_lens: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._instruction_lock = threading.Lock()
        self._model: NVEmbedModel | None = None
        self._packed = False  # weights prepacked (a server): batches keep their own width

    @property
    def model(self) -> NVEmbedModel:
        if self._model is None:
            # int8: each layer's pages come in as it is converted and go once converted (peak: the int8 size)
            # folded: the latent layer's projections (NV-Embed-v2: 1 GiB) go once folded, before any conversion
            model = load_model(
                self.folder,
                dtype=self.dtype,
                device=self.device,
                resident_weights=not self.int8,
                folded_only=self.folded,
                matmul_dtype=matmul_dtype(self.requested_dtype, self.device),
            )
            convert_matmuls(model, self.requested_dtype, self.device, model.backbone)  # int8, widened bfloat16
            self._model = model
        return self._model

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        # the decoder's and the latent layer's feed-forward (its folded matrices are plain tensors)
        said = prepack_weights(self.name, self.model, self.device, self.dtype, busy)
        self._packed = said is not None
        return said

    def instruction_length(self, instruction: str) -> int:
        """Tokens of the instruction tokenised alone, without BOS: the count the reference masks."""
        if not instruction:
            return 0
        with self._instruction_lock:
            known = self._instruction_lens.get(instruction)
            if known is not None:
                self._instruction_lens.move_to_end(instruction)
                return known
        n = len(self._tokenizer.encode(instruction, add_special_tokens=False).ids)
        with self._instruction_lock:
            self._instruction_lens[instruction] = n
            while len(self._instruction_lens) > INSTRUCTION_CACHE_SIZE:
                self._instruction_lens.popitem(last=False)
        return n

    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch([prefix + text + EOS for text in texts])
        return [e.ids[: self.info.max_tokens] for e in encodings]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        spans = self._tokenizer.encode(text, add_special_tokens=False).offsets
        # "▁word" tokens span the space before the word: start the span at the word itself
        return [(start + 1 if end - start > 1 and text[start].isspace() else start, end) for start, end in spans]

    def build_inputs(
        self, batch: Sequence[Sequence[int]], prefix: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, pool_mask), each (B, L), right-padded with EOS to the longest row."""
        return right_padded(batch, EOS_ID, self.instruction_length(prefix))

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        input_ids, attention_mask, pool_mask = self.build_inputs(batch, prefix)
        if bool((pool_mask.sum(dim=1) == 0).any()):
            # the reference returns NaN here (0/0); say why instead
            raise InstructionError(
                f"the instruction takes {self.instruction_length(prefix)} tokens and the max length is "
                f"{self.info.max_tokens}: no text token is left to embed",
                hint=Hint("raise --max-length or shorten the instruction", "shorten the instruction", "instruction"),
            )
        if self.dtype == torch.bfloat16 and self.device.type == "cpu" and not self._packed:
            width = cpu_batch_width(input_ids.shape[1], self.info.max_tokens)
            input_ids, attention_mask, pool_mask = _pad_width(input_ids, attention_mask, pool_mask, width)
        device = self.model.device
        with torch.inference_mode():
            vectors = self.model(
                input_ids.to(device),
                attention_mask.to(device),
                pool_mask.to(device),
                backend=self.backend,
                folded=self.folded,
            )
        return np.asarray(vectors.float().cpu().numpy(), dtype=np.float32)
