"""BERT's configuration and checkpoint layout, without torch: shared by the PyTorch encoder (bert.py) and the
NumPy one (bert_numpy.py), so both read a checkpoint through the same checked name map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvrag.errors import CheckpointError
from nvrag.model.config import check_sizes, read_config_json

UNUSED_KEYS = ("pooler.", "embeddings.position_ids")
ROBERTA_TYPES = ("roberta", "xlm-roberta")  # BERT's layers, positions numbered after the padding id


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    # RoBERTa and XLM-RoBERTa number positions from pad_token_id + 1 (fairseq's convention); BERT from 0
    position_offset: int = 0

    @property
    def max_tokens(self) -> int:
        """The longest input: the position table's rows past the offset."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config.json") -> BertConfig:
        if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{where}: only BERT with GELU and absolute positions is supported")
        try:
            offset = int(data.get("pad_token_id") or 0) + 1 if data.get("model_type") in ROBERTA_TYPES else 0
            config = cls(
                **{name: type(default)(data[name]) for name, default in _DEFAULTS.items()}, position_offset=offset
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: not a BERT config ({type(exc).__name__}: {exc})") from None
        if not 0 <= config.position_offset < config.max_position_embeddings:
            raise CheckpointError(f"{where}: pad_token_id leaves no positions")
        check_sizes(where, config)
        if config.hidden_size % config.num_attention_heads:
            raise CheckpointError(f"{where}: hidden_size is not a multiple of num_attention_heads")
        return config


_DEFAULTS = {name: getattr(BertConfig(), name) for name in BertConfig.__dataclass_fields__ if name != "position_offset"}


def read_bert_config(folder: Path) -> BertConfig:
    try:
        return BertConfig.from_dict(read_config_json(folder / "config.json"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no config.json") from None


_LAYER_PARTS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "up": "intermediate.dense",
    "down": "output.dense",
    "out_norm": "output.LayerNorm",
}


def name_map(c: BertConfig) -> dict[str, str]:
    """Our parameter name → the checkpoint's, for every parameter."""
    names = {
        "word.weight": "embeddings.word_embeddings.weight",
        "position.weight": "embeddings.position_embeddings.weight",
        "token_type.weight": "embeddings.token_type_embeddings.weight",
        "embed_norm.weight": "embeddings.LayerNorm.weight",
        "embed_norm.bias": "embeddings.LayerNorm.bias",
    }
    for i in range(c.num_hidden_layers):
        for ours, theirs in _LAYER_PARTS.items():
            for p in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return names


def parameter_shapes(c: BertConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter name → its shape (nn.Linear's (out, in) for weights)."""
    h, inter = c.hidden_size, c.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "word.weight": (c.vocab_size, h),
        "position.weight": (c.max_position_embeddings, h),
        "token_type.weight": (c.type_vocab_size, h),
        "embed_norm.weight": (h,),
        "embed_norm.bias": (h,),
    }
    per_layer = {
        "query": (h, h),
        "key": (h, h),
        "value": (h, h),
        "attn_out": (h, h),
        "up": (inter, h),
        "down": (h, inter),
    }
    for i in range(c.num_hidden_layers):
        for part, (rows, cols) in per_layer.items():
            shapes[f"layers.{i}.{part}.weight"] = (rows, cols)
            shapes[f"layers.{i}.{part}.bias"] = (rows,)
        for norm in ("attn_norm", "out_norm"):
            shapes[f"layers.{i}.{norm}.weight"] = (h,)
            shapes[f"layers.{i}.{norm}.bias"] = (h,)
    return shapes


def check_checkpoint(weights: Path, c: BertConfig, stored: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """``stored``: the checkpoint's key → shape. Every parameter present with its shape, nothing unexpected (the
    unused pooler and position-id buffer aside), or CheckpointError naming what is wrong. Returns name_map(c)."""
    return check_names(weights, name_map(c), parameter_shapes(c), stored, UNUSED_KEYS)


def check_names(
    weights: Path,
    names: Mapping[str, str],
    shapes: Mapping[str, tuple[int, ...]],
    stored: Mapping[str, tuple[int, ...]],
    unused: tuple[str, ...] = (),
) -> dict[str, str]:
    """Our name → stored name for every parameter, each stored with its shape; a stored key nobody reads (other
    than those starting with one of ``unused``) is an error too. CheckpointError names the first problems."""
    missing = sorted(set(names.values()) - set(stored))
    unexpected = sorted(k for k in set(stored) - set(names.values()) if not k.startswith(unused))
    if missing or unexpected:
        raise CheckpointError(f"{weights}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for ours, expected in shapes.items():
        found = tuple(stored[names[ours]])
        if found != expected:
            raise CheckpointError(f"{weights}: {names[ours]} has shape {found}, expected {expected}")
    return dict(names)
