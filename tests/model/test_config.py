from __future__ import annotations

import json
from typing import Any

import pytest

from nvrag.errors import CheckpointError
from nvrag.model import LatentConfig, NVEmbedConfig, tiny_config
from tests.conftest import NVEMBED_TINY


def fixture_config() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((NVEMBED_TINY / "config.json").read_text(encoding="utf-8"))
    return data


def test_fixture_config_is_the_tiny_preset() -> None:
    assert NVEmbedConfig.from_dict(fixture_config()) == tiny_config()


def test_missing_latent_keys_take_the_real_defaults() -> None:
    data = fixture_config()
    data["text_config"].update(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8)
    data["latent_attention_config"] = {"model_type": "latent_attention"}  # what the real config.json holds
    config = NVEmbedConfig.from_dict(data)
    assert config.latent == LatentConfig(
        num_latents_value=512, num_cross_heads=8, cross_dim_head=4096, hidden_dim=4096, latent_dim=4096
    )
    assert config.latent.output_normalize is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(model_type="bert"), "model_type 'bert', not 'nvembed'"),
        (lambda d: d.pop("text_config"), "no 'text_config' object"),
        (lambda d: d["text_config"].pop("hidden_size"), "text_config: missing or invalid 'hidden_size'"),
        (lambda d: d["text_config"].update(num_key_value_heads=3), "do not divide evenly"),
        (lambda d: d["latent_attention_config"].update(latent_dim=32), "must be equal"),
        (lambda d: d["latent_attention_config"].update(num_cross_heads="two"), "latent_attention_config: invalid"),
    ],
)
def test_bad_configs_are_named(change: Any, message: str) -> None:
    data = fixture_config()
    change(data)
    with pytest.raises(CheckpointError, match=message):
        NVEmbedConfig.from_dict(data)
