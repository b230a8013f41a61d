"""Pure PyTorch embedding models: one decoder engine (Mistral, Llama, Qwen2, Qwen3; causal or bidirectional)
with pooling as data, NV-Embed-v2 (bidirectional Mistral + latent-attention pooling) and BERT. No tokenizer,
no network.

``load_model(folder)`` reads a checkpoint folder (config.json + sharded safetensors) through one checked name
map; ``NVEmbedModel(input_ids, attention_mask, pool_mask)`` returns L2-normalised float32 embeddings.

The names below load on first use: importing a torch-free submodule (bert_config, bert_numpy, config) does
not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nvrag.model.attention import Backend, available_backends
    from nvrag.model.config import LatentConfig, NVEmbedConfig, nvembed_text_config, tiny_config
    from nvrag.model.decoder_config import DecoderConfig, decoder_config_from_hf
    from nvrag.model.embedding import DecoderEmbeddingModel
    from nvrag.model.loading import load_model, name_map, read_config
    from nvrag.model.nvembed import NVEmbedModel
    from nvrag.model.pooling import PoolingSpec

_WHERE = {
    "Backend": "attention",
    "available_backends": "attention",
    "LatentConfig": "config",
    "nvembed_text_config": "config",
    "DecoderConfig": "decoder_config",
    "decoder_config_from_hf": "decoder_config",
    "DecoderEmbeddingModel": "embedding",
    "PoolingSpec": "pooling",
    "NVEmbedConfig": "config",
    "tiny_config": "config",
    "load_model": "loading",
    "name_map": "loading",
    "read_config": "loading",
    "NVEmbedModel": "nvembed",
}

__all__ = [
    "Backend",
    "DecoderConfig",
    "DecoderEmbeddingModel",
    "LatentConfig",
    "NVEmbedConfig",
    "NVEmbedModel",
    "PoolingSpec",
    "available_backends",
    "decoder_config_from_hf",
    "load_model",
    "name_map",
    "nvembed_text_config",
    "read_config",
    "tiny_config",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"nvrag.model.{_WHERE[name]}"), name)
