"""Typed settings, read once here: the only place nvrag reads the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_path

from nvrag.errors import ConfigError

ENV_DB = "NVRAG_DB"
ENV_MODEL = "NVRAG_MODEL"
ENV_DEVICE = "NVRAG_DEVICE"
ENV_NVEMBED_PATH = "NVRAG_NVEMBED_PATH"
ENV_DTYPE = "NVRAG_DTYPE"
ENV_ATTENTION = "NVRAG_ATTENTION"
ENV_STORE = "NVRAG_STORE"
ENV_UI_USER = "NVRAG_UI_USER"
ENV_UI_PASSWORD = "NVRAG_UI_PASSWORD"
ENV_API_KEY = "NVRAG_API_KEY"
ENV_MODEL_MEMORY = "NVRAG_MODEL_MEMORY"


def default_db() -> str:
    return str(user_data_path("nvrag", appauthor=False) / "lancedb")


@dataclass(frozen=True)
class Settings:
    db: str  # LanceDB directory or object-store URI
    model: str = "auto"
    device: str | None = None  # None: cuda when available, else cpu
    nvembed_path: Path | None = None  # a local NV-Embed-v2 checkpoint folder
    dtype: str | None = None  # None: embedder.dtypes.choose_dtype (bf16 on CUDA and native-bf16 CPUs)
    attention: str = "auto"  # attention backend of the PyTorch decoders (NV-Embed and the decoder embedders)
    store: str = "lancedb"  # lancedb | faiss
    devices: tuple[str, ...] = ()  # several: one model replica per device (--devices)
    model_memory: float | None = None  # GiB a server's loaded models may take (None: a share of the memory)

    @classmethod
    def from_env(
        cls,
        *,
        db: str | None = None,
        model: str | None = None,
        dtype: str | None = None,
        model_memory: float | None = None,
    ) -> Settings:
        """Settings from explicit values first, then NVRAG_* environment variables, then defaults."""
        nvembed = os.environ.get(ENV_NVEMBED_PATH)
        if model_memory is None and os.environ.get(ENV_MODEL_MEMORY):
            model_memory = _gib(ENV_MODEL_MEMORY, os.environ[ENV_MODEL_MEMORY])
        return cls(
            db=db or os.environ.get(ENV_DB) or default_db(),
            model=model or os.environ.get(ENV_MODEL) or "auto",
            device=os.environ.get(ENV_DEVICE) or None,
            nvembed_path=Path(nvembed) if nvembed else None,
            dtype=dtype or os.environ.get(ENV_DTYPE) or None,
            attention=os.environ.get(ENV_ATTENTION) or "auto",
            store=(os.environ.get(ENV_STORE) or "lancedb").strip().lower(),
            model_memory=model_memory,
        )


def _gib(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise ConfigError(f"{name}={text!r}: give the memory in GiB as a positive number, for example 12")
    return value
