"""The same BERT encoder as bert.py in NumPy, float32, for short inputs on the CPU without importing torch.

A one-shot ``nvrag search`` embeds one query of a few tokens: its forward pass is milliseconds, while
``import torch`` alone is 1.5 s of the process (docs/performance.md). This path computes what
``bert.BertEncoder`` computes in float32 (post-norm layers, padding-masked softmax attention, erf GELU), from
the same checkpoint through the same checked name map; ``tests/model/test_bert.py`` holds both to
transformers' BertModel. Matmuls go to NumPy's BLAS. Not meant for bulk work: the embedder sends only small
batches here (``minilm.NUMPY_MAX_TOKENS``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors import safe_open

from nvrag.errors import CheckpointError
from nvrag.model.bert_config import BertConfig, check_checkpoint, read_bert_config

F32 = npt.NDArray[np.float32]
NUMPY_DTYPES = {"F16", "F32", "F64"}  # safetensors dtypes NumPy reads (bfloat16 is not one)
Weights = dict[str, F32]

# Numerical Recipes' erfc (Chebyshev fit, "erfcc"): fractional error below 1.2e-7 everywhere. NumPy has no erf,
# and scipy's import would cost much of what this path saves. Evaluated in float32, in place: GELU within 4e-7
# of the exact value (torch's float32 GELU: within 1.1e-6); tests/model/test_bert.py checks it against math.erfc.
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
         -0.82215223, 0.17087277)  # fmt: skip
_INV_SQRT2 = np.float32(1.0 / np.sqrt(2.0))


def gelu(x: F32) -> F32:
    """x Φ(x), the erf GELU (not tanh), with Φ(-|x|) = erfc(|x|/√2) / 2 and Φ(x) = 1 - Φ(-x)."""
    z = np.abs(x) * _INV_SQRT2
    t = z * np.float32(0.5)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = np.full_like(t, np.float32(_ERFC[-1]))
    for c in reversed(_ERFC[1:-1]):
        poly *= t
        poly += np.float32(c)
    poly *= t
    poly += np.float32(_ERFC[0])
    z *= z
    poly -= z
    np.exp(poly, out=poly)
    poly *= t
    poly *= np.float32(0.5)  # Φ(-|x|)
    phi: F32 = np.where(x >= 0, np.float32(1.0) - poly, poly)
    phi *= x
    return phi


def layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    out: F32 = centred / np.sqrt(var + np.float32(eps)) * weight + bias
    return out


class NumpyBert:
    """``bert.BertEncoder``'s forward: (B, T) ids and a 0/1 mask → (B, T, hidden) last hidden state."""

    def __init__(self, config: BertConfig, weights: Weights) -> None:
        self.config = config
        # nn.Linear computes x Wᵀ + b: the layers' weights are kept transposed (in, out), contiguous, instead
        self.w = {
            k: np.ascontiguousarray(v.T) if v.ndim == 2 and k.startswith("layers.") else v for k, v in weights.items()
        }

    def _linear(self, x: F32, name: str) -> F32:
        weight = self.w[f"{name}.weight"]  # (in, out)
        out: F32 = x.reshape(-1, weight.shape[0]) @ weight  # one GEMM over all rows
        out += self.w[f"{name}.bias"]
        return out.reshape(*x.shape[:-1], weight.shape[1])

    def _heads(self, y: F32) -> F32:
        """(B, T, hidden) → (B, heads, T, d)."""
        b, t, hidden = y.shape
        heads = self.config.num_attention_heads
        return y.reshape(b, t, heads, hidden // heads).transpose(0, 2, 1, 3)

    def __call__(self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]) -> F32:
        c, w = self.config, self.w
        b, t = input_ids.shape
        if t > c.max_position_embeddings:
            raise ValueError(f"{t} tokens: the model has {c.max_position_embeddings} positions")
        d = c.hidden_size // c.num_attention_heads
        x = w["word.weight"][input_ids] + w["position.weight"][:t] + w["token_type.weight"][0]
        x = layer_norm(x, w["embed_norm.weight"], w["embed_norm.bias"], c.layer_norm_eps)
        # padded keys get -inf before the softmax; every row has at least one real token (the [CLS])
        key_bias = np.where(attention_mask[:, None, None, :] > 0, np.float32(0.0), np.float32(-np.inf))
        scale = np.float32(1.0 / np.sqrt(d))
        for i in range(c.num_hidden_layers):
            p = f"layers.{i}"
            q, k, v = (self._heads(self._linear(x, f"{p}.{n}")) for n in ("query", "key", "value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias  # (B, heads, T, T)
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            attended = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, c.hidden_size)
            x = layer_norm(
                self._linear(attended, f"{p}.attn_out") + x, w[f"{p}.attn_norm.weight"], w[f"{p}.attn_norm.bias"],
                c.layer_norm_eps,
            )  # fmt: skip
            mlp = self._linear(gelu(self._linear(x, f"{p}.up")), f"{p}.down")
            x = layer_norm(mlp + x, w[f"{p}.out_norm.weight"], w[f"{p}.out_norm.bias"], c.layer_norm_eps)
        return x


def load_numpy_bert(folder: Path) -> NumpyBert:
    """The encoder of a BERT checkpoint folder (config.json, model.safetensors) as float32 NumPy arrays."""
    config = read_bert_config(folder)
    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="np") as f:
        stored = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 - not a dict
        names = check_checkpoint(weights, config, stored)
        odd = sorted({f.get_slice(theirs).get_dtype() for theirs in names.values()} - NUMPY_DTYPES)
        if odd:
            raise CheckpointError(f"{weights}: stored as {', '.join(odd)}, which NumPy cannot read; use PyTorch")
        arrays = {ours: np.ascontiguousarray(f.get_tensor(theirs), dtype=np.float32) for ours, theirs in names.items()}
    return NumpyBert(config, arrays)
