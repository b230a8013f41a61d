"""The decoder backbones' configuration, read from a Hugging Face config.json in either layout.

One dataclass covers Mistral, Llama, Qwen2 and Qwen3 (and NV-Embed's bidirectional Mistral): what differs
between them is data, not code: which projections carry biases, whether q and k are RMS-normalised per head,
the RoPE frequencies (llama3 scaling), causal or bidirectional attention, a sliding window.

config.json layouts: transformers 4 writes ``rope_theta`` and ``rope_scaling`` at the top level and
``torch_dtype``; transformers 5 nests them in ``rope_parameters`` and writes ``dtype``. Both are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nvrag.errors import CheckpointError

# model_type → the family whose layer layout it uses
FAMILIES = ("mistral", "llama", "qwen2", "qwen3")
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding: base frequency and an optional scaling of the inverse frequencies."""

    theta: float = 10000.0
    kind: str = "default"  # default | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class DecoderConfig:
    """A decoder backbone. Defaults: Mistral-7B's shape, causal (NV-Embed sets ``causal=False``)."""

    family: str = "mistral"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim_override: int | None = None  # config.json's head_dim, where it is not hidden / heads
    rms_norm_eps: float = 1e-5
    rope: RopeConfig = field(default_factory=RopeConfig)
    qkv_bias: bool = False  # q, k and v projections carry a bias (Qwen2; Llama/Qwen3 with attention_bias)
    o_bias: bool = False  # the output projection carries one (Llama/Qwen3 with attention_bias)
    mlp_bias: bool = False  # Llama's mlp_bias
    qk_norm: bool = False  # Qwen3: RMSNorm over each head of q and k, before RoPE
    causal: bool = True
    sliding_window: int | None = None  # causal only: a token sees the previous ``sliding_window`` tokens

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_attention_heads

    @property
    def rope_theta(self) -> float:
        return self.rope.theta

    def validate(self, where: str = "config.json") -> None:
        from nvrag.model.config import check_sizes  # the shared size limits

        check_sizes(where, self)
        if self.family not in FAMILIES:
            raise CheckpointError(f"{where}: model family {self.family!r} is not one of {', '.join(FAMILIES)}")
        if self.head_dim_override is not None and not 2 <= self.head_dim_override <= 4096:
            raise CheckpointError(f"{where}: head_dim {self.head_dim_override} must be between 2 and 4096")
        if self.head_dim_override is None and self.hidden_size % self.num_attention_heads:
            raise CheckpointError(
                f"{where}: hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(
                f"{where}: {self.num_attention_heads} heads and {self.num_key_value_heads} key/value heads do not "
                "divide evenly"
            )
        if self.head_dim % 2:
            raise CheckpointError(f"{where}: head dimension {self.head_dim} must be even for RoPE")
        for name in ("rms_norm_eps", "rope_theta"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise CheckpointError(f"{where}: {name} is {value}; it must be a positive number")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise CheckpointError(f"{where}: sliding_window is {self.sliding_window}; it must be at least 1")


def _number(data: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    value = data.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckpointError(f"config.json: {key} is {value!r}; expected a number")
    return kind(value)


def rope_from_hf(data: dict[str, Any]) -> RopeConfig:
    """The RoPE settings from either layout: ``rope_parameters`` (transformers 5) or top-level ``rope_theta``
    with ``rope_scaling`` (transformers 4). A scaling nvrag does not implement is refused by name."""
    params = data.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise CheckpointError("config.json: rope_parameters is not an object")
    scaling = data.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise CheckpointError("config.json: rope_scaling is not an object")
    merged: dict[str, Any] = {"rope_theta": data.get("rope_theta", 10000.0)}
    merged |= scaling or {}
    merged |= params or {}
    kind = str(merged.get("rope_type") or merged.get("type") or "default")
    if kind not in ROPE_TYPES:
        raise CheckpointError(
            f"config.json: RoPE scaling {kind!r} is not supported (nvrag implements {', '.join(ROPE_TYPES)})"
        )
    return RopeConfig(
        theta=_number(merged, "rope_theta", 10000.0, float),
        kind=kind,
        factor=_number(merged, "factor", 1.0, float),
        low_freq_factor=_number(merged, "low_freq_factor", 1.0, float),
        high_freq_factor=_number(merged, "high_freq_factor", 4.0, float),
        original_max_position_embeddings=_number(merged, "original_max_position_embeddings", 8192, int),
    )


def decoder_config_from_hf(data: dict[str, Any], *, causal: bool | None = None) -> DecoderConfig:
    """A DecoderConfig from a parsed config.json of a Mistral, Llama, Qwen2 or Qwen3 model.

    ``causal`` overrides the file (a registry entry for a hub repo whose config leaves attention to remote
    code); otherwise ``is_causal`` decides, causal when absent, as transformers reads it.
    """
    family = data.get("model_type")
    if family not in FAMILIES:
        raise CheckpointError(
            f"config.json: model_type {family!r} is not a supported decoder (supported: {', '.join(FAMILIES)})"
        )
    if family in ("qwen2", "qwen3") and data.get("use_sliding_window"):
        raise CheckpointError(f"config.json: {family} with use_sliding_window true is not supported")
    attention_bias = bool(data.get("attention_bias", False))
    is_causal = data.get("is_causal", True)
    if not isinstance(is_causal, bool):
        raise CheckpointError(f"config.json: is_causal is {is_causal!r}; expected true or false")
    head_dim = data.get("head_dim")
    window = data.get("sliding_window") if family == "mistral" else None
    try:
        heads = int(data["num_attention_heads"])
        config = DecoderConfig(
            family=family,
            vocab_size=int(data["vocab_size"]),
            hidden_size=int(data["hidden_size"]),
            intermediate_size=int(data["intermediate_size"]),
            num_hidden_layers=int(data["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(data.get("num_key_value_heads") or heads),
            head_dim_override=int(head_dim) if head_dim is not None else None,
            rms_norm_eps=_number(data, "rms_norm_eps", 1e-6 if family.startswith("qwen") else 1e-5, float),
            rope=rope_from_hf(data),
            qkv_bias=family == "qwen2" or attention_bias,
            o_bias=family in ("llama", "qwen3") and attention_bias,
            mlp_bias=family == "llama" and bool(data.get("mlp_bias", False)),
            qk_norm=family == "qwen3",
            causal=is_causal if causal is None else causal,
            sliding_window=int(window) if window is not None else None,
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json: invalid value ({exc})") from None
    config.validate()
    return config


def stored_dtype(data: dict[str, Any]) -> str | None:
    """The weights' dtype as config.json records it (``dtype`` in transformers 5, ``torch_dtype`` in 4)."""
    value = data.get("dtype", data.get("torch_dtype"))
    return value if isinstance(value, str) else None
