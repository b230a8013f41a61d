"""Text in, float32 L2-normalised vectors out: the Embedder interface, instructions, models and their registry."""

from nvrag.embedder.base import Embedder, FloatArray, ModelInfo
from nvrag.embedder.fake import WordLengthEmbedder
from nvrag.embedder.prompts import TASK_INSTRUCTIONS, resolve_instruction
from nvrag.embedder.registry import (
    AUTO,
    REGISTRY,
    LoadOptions,
    ModelSpec,
    choose_model,
    get_spec,
    load_embedder,
)

__all__ = [
    "AUTO",
    "REGISTRY",
    "TASK_INSTRUCTIONS",
    "Embedder",
    "FloatArray",
    "LoadOptions",
    "ModelInfo",
    "ModelSpec",
    "WordLengthEmbedder",
    "choose_model",
    "get_spec",
    "load_embedder",
    "resolve_instruction",
]
