"""Pure PyTorch NV-Embed-v2: bidirectional Mistral + latent-attention pooling. No tokenizer, no network.

``load_model(folder)`` reads a checkpoint folder (config.json + sharded safetensors) through one checked name
map; ``NVEmbedModel(input_ids, attention_mask, pool_mask)`` returns L2-normalised float32 embeddings.
"""

from nvrag.model.attention import Backend, available_backends
from nvrag.model.config import LatentConfig, MistralConfig, NVEmbedConfig, tiny_config
from nvrag.model.loading import load_model, name_map, read_config
from nvrag.model.nvembed import NVEmbedModel

__all__ = [
    "Backend",
    "LatentConfig",
    "MistralConfig",
    "NVEmbedConfig",
    "NVEmbedModel",
    "available_backends",
    "load_model",
    "name_map",
    "read_config",
    "tiny_config",
]
