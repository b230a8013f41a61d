"""LLM rerankers in Qwen3-Reranker's form: a causal language model asked whether a document meets the query,
scored by the probability of "yes" against "no" at the last position.

The input, as the model card's transformers code builds it (QwenLM/Qwen3-Embedding,
examples/qwen3_reranker_transformers.py):

    PREFIX + tokens("<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}") + SUFFIX

PREFIX is the system turn and the user turn's opening, SUFFIX closes the user turn and opens the assistant's
with an empty think block. The middle part is tokenised alone, truncated (from the right: the document's end
goes first) to ``max_length - len(PREFIX) - len(SUFFIX)``. The reference left-pads its batches and reads the
last column; batches here are right-padded and read each row's own last token, which is the same (RoPE sees
relative positions only, padding is masked). Score = softmax([logit(no), logit(yes)])[1] = sigmoid(yes - no).

A query (with its instruction) that leaves no room for any of the document is refused: truncating it would
score a pair the user did not ask about.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nvrag.errors import CheckpointError, ConfigError, Hint, InputError
from nvrag.model.decoder_config import decoder_config_from_hf
from nvrag.model.loading import load_token_scorer
from nvrag.model.token_scorer import TokenScorer
from nvrag.reranker.base import Checkpoint, PairInput
from nvrag.reranker.decoder_base import DecoderReranker
from nvrag.reranker.tokens import load_pair_tokenizer, truncation_side

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
YES, NO = "yes", "no"
DEFAULT_MAX_TOKENS = 8192  # the model card's max_length


def format_pair(instruction: str, query: str, document: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class LLMReranker(DecoderReranker):
    def __init__(self, source: Checkpoint) -> None:
        config, folder = source.config, source.folder
        self.decoder = decoder_config_from_hf(config)
        if not self.decoder.causal:
            raise CheckpointError(f"{source.where}: an LLM reranker is a causal language model")
        self.tokenizer, _ = load_pair_tokenizer(folder)
        self.prefix = self.tokenizer.encode(PREFIX, add_special_tokens=False).ids
        self.suffix = self.tokenizer.encode(SUFFIX, add_special_tokens=False).ids
        token_ids = tuple(self.tokenizer.token_to_id(t) for t in (NO, YES))
        if any(t is None for t in token_ids):
            raise CheckpointError(f"{folder}/tokenizer.json: no single token for 'yes' and 'no'")
        self.token_ids: tuple[int, int] = token_ids  # type: ignore[assignment]  # checked above
        positions = int(config.get("max_position_embeddings") or DEFAULT_MAX_TOKENS)
        max_tokens = source.max_length or min(positions, DEFAULT_MAX_TOKENS)
        fixed = len(self.prefix) + len(self.suffix)
        if not fixed < max_tokens <= positions:
            raise ConfigError(
                f"max length {max_tokens} is outside {fixed + 1}..{positions} (the template's {fixed} tokens, the "
                "model's positions)"
            )
        self.room = max_tokens - fixed
        self.tokenizer.enable_truncation(self.room, strategy="longest_first", direction=truncation_side(folder))
        super().__init__(source, source.info("llm", max_tokens, "P(yes)", DEFAULT_INSTRUCTION))
        self.tied = bool(config.get("tie_word_embeddings", False))

    def load(self) -> TokenScorer:
        return load_token_scorer(
            self.source.folder, self.decoder, self.token_ids, tied=self.tied, dtype=self.dtype, device=self.device,
            matmul_dtype=self.matmul_dtype,
        )  # fmt: skip

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits[:, 1] - logits[:, 0])  # softmax([no, yes])[1]

    def encode(self, query: str, documents: Sequence[str], instruction: str | None) -> list[PairInput]:
        chosen = DEFAULT_INSTRUCTION if instruction is None else instruction
        head = self.tokenizer.encode(format_pair(chosen, query, ""))
        if head.overflowing:
            raise InputError(
                f"the query and instruction take over {self.room} tokens, leaving no room for a document within "
                f"the reranker's max length {self.info.max_tokens}",
                hint=Hint("shorten them or raise --max-length", "shorten them", "query"),
            )
        encodings = self.tokenizer.encode_batch([format_pair(chosen, query, d) for d in documents])
        return [PairInput(ids=self.prefix + e.ids + self.suffix, truncated=bool(e.overflowing)) for e in encodings]
