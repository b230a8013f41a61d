"""A BERT encoder in plain PyTorch, for the bundled all-MiniLM-L6-v2 (and BERT checkpoints of its form).

Post-norm BERT: embeddings (word + absolute position + token type 0) → LayerNorm, then per layer
self-attention (SDPA, padding masked) → dense → residual + LayerNorm, and GELU (erf) MLP → residual +
LayerNorm; it returns the last hidden state. Weights are read from ``model.safetensors`` through one checked
name map (every parameter present with its shape; the unused pooler and position-id buffer are the only keys
left over). This replaces transformers' ``BertModel``, whose import alone cost seconds; the vectors are the
same (``tests/embedder/test_minilm.py`` compares them with sentence-transformers within 1e-5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from safetensors import safe_open
from torch import nn

from nvrag.errors import CheckpointError
from nvrag.model.skeleton import skeleton

UNUSED_KEYS = ("pooler.", "embeddings.position_ids")


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

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config.json") -> BertConfig:
        if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{where}: only BERT with GELU and absolute positions is supported")
        try:
            config = cls(**{name: type(default)(data[name]) for name, default in _DEFAULTS.items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: not a BERT config ({type(exc).__name__}: {exc})") from None
        if config.hidden_size % config.num_attention_heads:
            raise CheckpointError(f"{where}: hidden_size is not a multiple of num_attention_heads")
        return config


_DEFAULTS = {name: getattr(BertConfig(), name) for name in BertConfig.__dataclass_fields__}


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        h = c.hidden_size
        self.heads = c.num_attention_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)
        self.up = nn.Linear(h, c.intermediate_size)
        self.down = nn.Linear(c.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)  # (B, heads, T, d)

        attended = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), attn_mask=mask
        )
        x = self.attn_norm(self.attn_out(attended.transpose(1, 2).reshape(b, t, h)) + x)
        out: torch.Tensor = self.out_norm(self.down(F.gelu(self.up(x))) + x)
        return out


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.config = c
        self.word = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.embed_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids and 0/1 mask → (B, T, hidden) last hidden state (padded rows are garbage)."""
        t = input_ids.shape[1]
        if t > self.config.max_position_embeddings:
            raise ValueError(f"{t} tokens: the model has {self.config.max_position_embeddings} positions")
        positions = torch.arange(t, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        hidden: torch.Tensor = self.embed_norm(x)
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): every query sees the real tokens
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return hidden


def name_map(c: BertConfig) -> dict[str, str]:
    """Our parameter name → the checkpoint's, for every parameter."""
    names = {
        "word.weight": "embeddings.word_embeddings.weight",
        "position.weight": "embeddings.position_embeddings.weight",
        "token_type.weight": "embeddings.token_type_embeddings.weight",
        "embed_norm.weight": "embeddings.LayerNorm.weight",
        "embed_norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "up": "intermediate.dense",
        "down": "output.dense",
        "out_norm": "output.LayerNorm",
    }
    for i in range(c.num_hidden_layers):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return names


def load_bert(folder: Path, device: torch.device | str = "cpu") -> BertEncoder:
    """The encoder of a BERT checkpoint folder (config.json, model.safetensors), in eval mode on ``device``."""
    try:
        config = BertConfig.from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: cannot read config.json ({exc})") from None
    with skeleton():
        model = BertEncoder(config)
    names = name_map(config)
    weights = folder / "model.safetensors"
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(weights), framework="pt", device=str(device)) as f:
        keys = set(f.keys())
        missing = sorted(set(names.values()) - keys)
        unexpected = sorted(k for k in keys - set(names.values()) if not k.startswith(UNUSED_KEYS))
        if missing or unexpected:
            raise CheckpointError(f"{weights}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        for ours, theirs in names.items():
            tensor = f.get_tensor(theirs)
            expected = tuple(model.get_parameter(ours).shape)
            if tuple(tensor.shape) != expected:
                raise CheckpointError(f"{weights}: {theirs} has shape {tuple(tensor.shape)}, expected {expected}")
            state[ours] = tensor.float()
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()
