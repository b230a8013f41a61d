"""A reranker checkpoint's tokenizer and the input limit its tokenizer_config.json records. Torch-free."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from nvrag.embedder.hf_tokenizer import load_tokenizer
from nvrag.model.config import read_config_json

MAX_SANE_LENGTH = 1_000_000  # transformers writes 1e30 for "no limit"


def model_max_length(folder: Path) -> int | None:
    """tokenizer_config.json's ``model_max_length`` where it is a real limit, else None."""
    try:
        value = read_config_json(folder / "tokenizer_config.json").get("model_max_length")
    except FileNotFoundError:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SANE_LENGTH else None


def load_pair_tokenizer(folder: Path) -> tuple[Tokenizer, int | None]:
    """The folder's tokenizer.json (bounded and checked as the embedders' are) and its model_max_length."""
    return load_tokenizer(folder), model_max_length(folder)


def truncation_side(folder: Path) -> str:
    """tokenizer_config.json's ``truncation_side``: right (the default) or left."""
    try:
        value = read_config_json(folder / "tokenizer_config.json").get("truncation_side", "right")
    except FileNotFoundError:
        return "right"
    return "left" if value == "left" else "right"
