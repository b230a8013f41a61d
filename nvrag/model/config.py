"""NV-Embed configuration: dataclasses read from a checkpoint's config.json, with a tiny preset for tests.
The backbone is a DecoderConfig (model/decoder_config.py) with bidirectional attention."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvrag.errors import CheckpointError
from nvrag.model.decoder_config import DecoderConfig, RopeConfig

# What a config.json may claim before anything is built from it: generous (NV-Embed-v2 and BERT-large fit many
# times over), but a hostile or corrupt file cannot make nvrag build a billion layers or name-map entries.
SIZE_LIMITS = {
    "vocab_size": 1 << 21,
    "hidden_size": 1 << 16,
    "intermediate_size": 1 << 18,
    "num_hidden_layers": 512,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "max_position_embeddings": 1 << 20,
    "type_vocab_size": 1024,
    "num_latents_value": 1 << 16,
    "num_cross_heads": 1024,
    "cross_dim_head": 1 << 16,
    "hidden_dim": 1 << 16,
    "latent_dim": 1 << 16,
}


CONFIG_MAX_BYTES = 1 << 20  # real config.json files are a few KiB


def read_config_json(path: Path) -> dict[str, Any]:
    """A checkpoint's config.json as a dict: at most CONFIG_MAX_BYTES, UTF-8 JSON, an object; else one
    CheckpointError naming the file (FileNotFoundError passes through for the caller's own message)."""
    try:
        with path.open("rb") as f:
            raw = f.read(CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise CheckpointError(f"{path}: over {CONFIG_MAX_BYTES // 1024} KiB; not a model config")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def check_sizes(where: str, config: object) -> None:
    """Every size field of ``config`` (a dataclass) between 1 and its SIZE_LIMITS entry, or CheckpointError."""
    for name, limit in SIZE_LIMITS.items():
        value = getattr(config, name, None)
        if value is not None and not 1 <= value <= limit:
            raise CheckpointError(f"{where}: {name} is {value}; it must be between 1 and {limit}")


def nvembed_text_config(**fields: Any) -> DecoderConfig:
    """NV-Embed's backbone: Mistral made bidirectional, no sliding window (NVEMBED.md)."""
    return DecoderConfig(family="mistral", causal=False, **fields)


@dataclass(frozen=True)
class LatentConfig:
    """The latent-attention pooling layer. The real config.json stores none of these: these are the defaults."""

    num_latents_value: int = 512
    num_cross_heads: int = 8
    cross_dim_head: int = 4096
    hidden_dim: int = 4096
    latent_dim: int = 4096
    output_normalize: bool = True


@dataclass(frozen=True)
class NVEmbedConfig:
    text: DecoderConfig = field(default_factory=nvembed_text_config)
    latent: LatentConfig = field(default_factory=LatentConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NVEmbedConfig:
        """Build from a parsed config.json; raises CheckpointError naming what is wrong."""
        if data.get("model_type") != "nvembed":
            raise CheckpointError(f"config.json has model_type {data.get('model_type')!r}, not 'nvembed'")
        text = data.get("text_config")
        if not isinstance(text, dict):
            raise CheckpointError("config.json has no 'text_config' object")
        try:
            text_config = nvembed_text_config(
                vocab_size=int(text["vocab_size"]),
                hidden_size=int(text["hidden_size"]),
                intermediate_size=int(text["intermediate_size"]),
                num_hidden_layers=int(text["num_hidden_layers"]),
                num_attention_heads=int(text["num_attention_heads"]),
                num_key_value_heads=int(text.get("num_key_value_heads") or text["num_attention_heads"]),
                rms_norm_eps=float(text.get("rms_norm_eps", 1e-5)),
                rope=RopeConfig(theta=float(text.get("rope_theta", 10000.0))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"config.json text_config: missing or invalid {exc}") from exc
        raw_latent = data.get("latent_attention_config") or {}
        defaults = LatentConfig()
        try:
            latent = LatentConfig(
                num_latents_value=int(raw_latent.get("num_latents_value", defaults.num_latents_value)),
                num_cross_heads=int(raw_latent.get("num_cross_heads", defaults.num_cross_heads)),
                cross_dim_head=int(raw_latent.get("cross_dim_head", defaults.cross_dim_head)),
                hidden_dim=int(raw_latent.get("hidden_dim", defaults.hidden_dim)),
                latent_dim=int(raw_latent.get("latent_dim", defaults.latent_dim)),
                output_normalize=bool(raw_latent.get("output_normalize", defaults.output_normalize)),
            )
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"config.json latent_attention_config: invalid value ({exc})") from exc
        config = cls(text=text_config, latent=latent)
        config.validate()
        return config

    def validate(self) -> None:
        t, lat = self.text, self.latent
        check_sizes("config.json text_config", t)
        check_sizes("config.json latent_attention_config", lat)
        if t.hidden_size % t.num_attention_heads or t.num_attention_heads % t.num_key_value_heads:
            raise CheckpointError(
                f"config.json: hidden_size {t.hidden_size}, {t.num_attention_heads} heads and "
                f"{t.num_key_value_heads} key/value heads do not divide evenly"
            )
        if t.head_dim % 2:
            raise CheckpointError(f"config.json: head dimension {t.head_dim} must be even for RoPE")
        # The reference only runs when these agree (NVEMBED.md, quirk 9).
        if not lat.hidden_dim == lat.latent_dim == t.hidden_size:
            raise CheckpointError(
                f"config.json: latent hidden_dim {lat.hidden_dim}, latent_dim {lat.latent_dim} and text "
                f"hidden_size {t.hidden_size} must be equal"
            )


def tiny_config() -> NVEmbedConfig:
    """The shape of the shared test fixture (nvembed-tiny): for tests and benchmarks of the code paths."""
    return NVEmbedConfig(
        text=nvembed_text_config(
            vocab_size=32000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        latent=LatentConfig(num_latents_value=16, num_cross_heads=2, cross_dim_head=32, hidden_dim=64, latent_dim=64),
    )
