"""A decoder embedder (Qwen3-Embedding, gte-Qwen2, e5-mistral, NVIDIA's Llama embedders) from its own folder.

Per text: ``prompt + text`` (lower-cased where sentence_bert_config says so), tokenised by the checkpoint's
tokenizer with its special tokens, truncated to ``max_length`` ids with the special tokens kept (the appended
EOS that last-token pooling reads survives truncation, as in sentence-transformers), right-padded. The model
pools (model/pooling.py); here the vector is cut to ``dimensions`` (Matryoshka) and the base normalises.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from nvrag.embedder.base import Embedder, FloatArray, ModelInfo
from nvrag.embedder.checkpoint import query_template, read_folder
from nvrag.embedder.dtypes import cpu_batch_width
from nvrag.embedder.families import (
    GENERIC_LICENSE,
    Style,
    decide_causal,
    folder_model_name,
    hub_id_of_folder,
    known_model,
)
from nvrag.embedder.families import style_of as find_style
from nvrag.embedder.hf_tokenizer import load_tokenizer, prompt_length
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
from nvrag.errors import ConfigError
from nvrag.model.decoder_config import decoder_config_from_hf
from nvrag.model.embedding import DecoderEmbeddingModel
from nvrag.model.loading import load_decoder
from nvrag.model.pooling import PoolingSpec

DEFAULT_MAX_TOKENS = 8192  # when the folder names no max_seq_length
PROMPT_CACHE_SIZE = 256  # prompt token counts remembered (prompts are client input on a server)


class DecoderEmbedder(Embedder):
    """Any supported decoder checkpoint folder, embedded exactly as its reference does."""

    def __init__(
        self,
        folder: Path,
        *,
        name: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        max_length: int | None = None,
        batch_tokens: int = 4096,
        attention: str = "auto",
        dimensions: int | None = None,
    ) -> None:
        known = known_model(name) if name else None
        hub_id = hub_id_of_folder(folder.resolve().parts)
        known = known or (known_model(hub_id) if hub_id else None)
        facts = read_folder(folder, pooling_fallback=known.style_info.pooling if known else None)
        style = known.style_info if known else find_style(facts.model_type, facts.pooling)
        config = decoder_config_from_hf(
            facts.config, causal=decide_causal(facts.config, facts.remote_code, style, str(folder))
        )
        limit = int(facts.config.get("max_position_embeddings") or DEFAULT_MAX_TOKENS)
        max_tokens = max_length or facts.max_seq_length or min(limit, DEFAULT_MAX_TOKENS)
        if not 2 <= max_tokens <= limit:
            raise ConfigError(f"max length {max_tokens} is outside 2..{limit} (the model's positions)")
        self.dimensions = check_dimensions(dimensions, style, config.hidden_size, str(folder))
        query_prompt = facts.query_prompt
        if known and known.query_prompt_name and known.query_prompt_name in facts.prompts:
            query_prompt = facts.prompts[known.query_prompt_name]
        template, default_instruction = query_template(query_prompt)
        torch_device = torch.device(device)
        torch_dtype = parse_dtype(dtype, torch_device)
        info = ModelInfo(
            name=known.hub_id if known else folder_model_name(folder),
            revision=weights_fingerprint(folder),
            dimension=self.dimensions or config.hidden_size,
            max_tokens=max_tokens,
            query_template=template,
            document_template=facts.document_prompt,
            license=(known.license if known and known.license else None)
            or (style.license if style else GENERIC_LICENSE),
            default_instruction=default_instruction,
            compute_dtype=dtype_label(dtype, torch_dtype),
            source=str(folder.resolve()),
            matryoshka=bool(style and style.matryoshka),
        )
        super().__init__(info, batch_tokens=batch_tokens)
        self.int8 = is_int8(dtype)  # matmul weights in int8 (model/int8.py), the rest in torch_dtype
        self.requested_dtype = dtype  # int8, widened bfloat16: the layers' matmul weights (runtime.matmul_dtype)
        self.folder, self.facts, self.style, self.config = folder, facts, style, config
        self.device, self.dtype = torch_device, torch_dtype
        self.backend = choose_backend(attention, torch_device, torch_dtype)
        self.pooling = PoolingSpec(kind=facts.pooling, include_prompt=facts.include_prompt)  # type: ignore[arg-type]
        self._tokenizer = load_tokenizer(folder)
        self._specials = len(self._tokenizer.encode("").ids)
        if max_tokens <= self._specials:
            raise ConfigError(f"max length {max_tokens} leaves no room beside {self._specials} special tokens")
        self._prompt_lens: OrderedDict[str, int] = OrderedDict()
        self._prompt_lock = threading.Lock()
        self._model: DecoderEmbeddingModel | None = None
        self._packed = False  # weights prepacked (a server): batches keep their own width
        self._load_lock = threading.Lock()

    @property
    def model(self) -> DecoderEmbeddingModel:
        with self._load_lock:
            if self._model is None:
                model = load_decoder(
                    self.folder, self.config, self.pooling, dtype=self.dtype, device=self.device,
                    resident_weights=not self.int8, matmul_dtype=matmul_dtype(self.requested_dtype, self.device),
                )  # fmt: skip
                convert_matmuls(model.backbone, self.requested_dtype, self.device)  # int8, or widened bfloat16
                self._model = model
            return self._model

    @property
    def special_tokens(self) -> int:
        return self._specials

    def prepare_for_serving(self, busy: Callable[[], bool] | None = None) -> str | None:
        said = prepack_weights(self.name, self.model.backbone, self.device, self.dtype, busy)
        self._packed = said is not None
        return said

    def _text(self, prefix: str, text: str) -> str:
        full = prefix + text
        return full.lower() if self.facts.lower_case else full

    def tokenize(self, texts: Sequence[str], prefix: str) -> list[list[int]]:
        """The ids of ``prefix + text``: the text's tokens cut to leave room for the special tokens, which are
        then added (as transformers truncates: the appended EOS survives)."""
        room = self.info.max_tokens - self._specials
        encodings = self._tokenizer.encode_batch([self._text(prefix, t) for t in texts], add_special_tokens=False)
        out = []
        for encoding in encodings:
            if len(encoding.ids) > room:
                encoding.truncate(room)
            out.append(self._tokenizer.post_process(encoding).ids)
        return out

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        spans = self._tokenizer.encode(text, add_special_tokens=False).offsets
        # byte-level and metaspace tokens often carry the space before a word: start the span at the word
        return [(start + 1 if end - start > 1 and text[start].isspace() else start, end) for start, end in spans]

    def prompt_tokens(self, prefix: str) -> int:
        """Leading positions left out of mean pooling when the pooling config excludes the prompt."""
        if self.pooling.include_prompt or not prefix:
            return 0
        with self._prompt_lock:
            known = self._prompt_lens.get(prefix)
            if known is not None:
                self._prompt_lens.move_to_end(prefix)
                return known
        n = prompt_length(self._tokenizer, self._text(prefix, ""))
        with self._prompt_lock:
            self._prompt_lens[prefix] = n
            while len(self._prompt_lens) > PROMPT_CACHE_SIZE:
                self._prompt_lens.popitem(last=False)
        return n

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        width = max(len(ids) for ids in batch)
        if self.device.type == "cpu" and self.dtype == torch.bfloat16 and not self._packed:
            width = cpu_batch_width(width, self.info.max_tokens)  # oneDNN keeps one kernel per width
        # include_prompt false: the prompt's positions leave the mean (a text that is all prompt pools to a zero
        # vector, as in sentence-transformers); padding is masked, so any id pads
        input_ids, attention_mask, pool_mask = right_padded(batch, 0, self.prompt_tokens(prefix), width)
        model = self.model
        with torch.inference_mode():
            vectors = model(
                input_ids.to(model.device),
                attention_mask.to(model.device),
                pool_mask.to(model.device),
                backend=self.backend,
            )
        if self.dimensions:
            vectors = vectors[:, : self.dimensions]  # Matryoshka: cut first, the base normalises after
        return np.asarray(vectors.float().cpu().numpy(), dtype=np.float32)


def check_dimensions(dimensions: int | None, style: Style | None, full: int, where: str) -> int | None:
    """``dimensions`` for a Matryoshka-trained family, from 1 to the full width (the model cards name the sizes
    they evaluated: docs/models.md); None for the full width. Refused, with the reason, for other models."""
    if dimensions is None or dimensions == full:
        return None
    if style is None or not style.matryoshka:
        family = style.name if style else "this model"
        raise ConfigError(
            f"--dimensions {dimensions}: {family} is not Matryoshka-trained ({where}); its vectors are {full} "
            "dimensions"
        )
    if not 1 <= dimensions <= full:
        raise ConfigError(f"--dimensions {dimensions}: {style.name} vectors can be cut to 1 to {full} dimensions")
    return dimensions
