"""A BERT encoder in plain PyTorch, for the bundled all-MiniLM-L6-v2 (and BERT checkpoints of its form).

Post-norm BERT: embeddings (word + absolute position + token type 0) → LayerNorm, then per layer
self-attention (SDPA, padding masked) → dense → residual + LayerNorm, and GELU (erf) MLP → residual +
LayerNorm; it returns the last hidden state. Weights are read from ``model.safetensors`` through one checked
name map (every parameter present with its shape; the unused pooler and position-id buffer are the only keys
left over). This replaces transformers' ``BertModel``, whose import alone cost seconds; the vectors are the
same (``tests/embedder/test_minilm.py`` compares them with sentence-transformers within 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from safetensors import safe_open
from torch import nn

from nvrag.model.bert_config import BertConfig, check_checkpoint, read_bert_config
from nvrag.model.dense import Dense, cast_dense
from nvrag.model.skeleton import skeleton


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        h = c.hidden_size
        self.heads = c.num_attention_heads
        # on the CPU through oneDNN, the GELU fused into the matmul (dense.py)
        self.query, self.key, self.value = Dense(h, h), Dense(h, h), Dense(h, h)
        self.attn_out = Dense(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)
        self.up = Dense(h, c.intermediate_size, activation="gelu")  # the erf GELU
        self.down = Dense(c.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)  # (B, heads, T, d)

        attended = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), attn_mask=mask
        )
        x = self.attn_norm(self.attn_out(attended.transpose(1, 2).reshape(b, t, h)) + x)
        out: torch.Tensor = self.out_norm(self.down(self.up(x)) + x)
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

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) token ids and 0/1 mask (and segment ids: 0 for a single text or the first of a pair, 1 for the
        second; all 0 when None) → (B, T, hidden) last hidden state (padded rows are garbage)."""
        t = input_ids.shape[1]
        if t > self.config.max_tokens:
            raise ValueError(f"{t} tokens: the model has {self.config.max_tokens} positions")
        positions = torch.arange(t, device=input_ids.device) + self.config.position_offset
        segments = self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids)
        x = self.word(input_ids) + self.position(positions) + segments
        hidden: torch.Tensor = self.embed_norm(x)
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): every query sees the real tokens
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return hidden


def load_bert(
    folder: Path, device: torch.device | str = "cpu", matmul_dtype: torch.dtype = torch.float32
) -> BertEncoder:
    """The encoder of a BERT checkpoint folder (config.json, model.safetensors), in eval mode on ``device``.

    ``matmul_dtype`` bfloat16 (or float16) holds the linear layers' weights in that dtype, so the matmuls (and
    attention, whose inputs they produce) compute in it; embeddings, LayerNorms and the residual stream stay
    float32, what autocast would do, without re-casting every weight on every call."""
    config = read_bert_config(folder)
    with skeleton():
        model = BertEncoder(config)
    weights = folder / "model.safetensors"
    load_checked(weights, model, lambda stored: check_checkpoint(weights, config, stored), device)
    cast_dense(model, matmul_dtype)
    return model.to(device).eval()


def load_checked(
    weights: Path,
    model: nn.Module,
    check: Callable[[dict[str, tuple[int, ...]]], dict[str, str]],
    device: torch.device | str,
) -> None:
    """Assign ``model``'s parameters (built in a skeleton) from one safetensors file, in float32; ``check`` gets
    the stored key → shape and returns our name → the stored name, raising CheckpointError on any mismatch."""
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(weights), framework="pt", device=str(device)) as f:
        stored = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 - not a dict
        for ours, theirs in check(stored).items():
            state[ours] = f.get_tensor(theirs).float()
    model.load_state_dict(state, strict=True, assign=True)
