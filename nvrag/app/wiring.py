"""The composition root: the one place that picks backends and models and connects the layers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nvrag.app.settings import Settings
from nvrag.embedder import AUTO, Embedder, LoadOptions, choose_model, get_spec, load_embedder
from nvrag.embedder.registry import NVEMBED_NAME
from nvrag.errors import ConfigError, ModelMismatchError, ModelUnavailableError
from nvrag.indexer import Indexer
from nvrag.retriever import Retriever
from nvrag.schema import ChunkerSettings
from nvrag.store import LanceStore, Store


@dataclass(frozen=True)
class ModelChoice:
    name: str
    reason: str
    license: str


def open_store(settings: Settings) -> LanceStore:
    if "://" not in settings.db:
        path = Path(settings.db).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--db {settings.db}: exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        return LanceStore(str(path))
    return LanceStore(settings.db)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _nvembed_weights(settings: Settings) -> Path | None:
    if settings.nvembed_path is not None:
        return settings.nvembed_path if (settings.nvembed_path / "config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(NVEMBED_NAME, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def choose(settings: Settings, requested: str | None) -> ModelChoice:
    """Resolve a model request (a name, an alias or ``auto``) to a registered model, with the reason."""
    wanted = requested or settings.model
    if wanted.strip().lower() == AUTO:
        name, reason = choose_model(AUTO, cuda_available=_cuda_available(), nvembed_weights=_nvembed_weights(settings))
    else:
        name, reason = choose_model(wanted, cuda_available=False, nvembed_weights=None)
    return ModelChoice(name=name, reason=reason, license=get_spec(name).license)


def load_options(settings: Settings, *, model_path: Path | None = None, max_length: int | None = None) -> LoadOptions:
    device = settings.device or ("cuda" if _cuda_available() else "cpu")
    return LoadOptions(device=device, model_path=model_path, max_length=max_length)


def model_path_kind(model_path: Path) -> str:
    """The ``model_type`` in a checkpoint folder's config.json."""
    config = model_path / "config.json"
    if not config.is_file():
        raise ConfigError(f"--model-path {model_path}: no config.json there; give a model checkpoint folder")
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--model-path {model_path}: cannot read config.json ({exc})") from exc
    return str(kind)


def load_model(
    settings: Settings, name: str, *, model_path: Path | None = None, max_length: int | None = None
) -> Embedder:
    if model_path is not None and model_path_kind(model_path) == "nvembed":
        raise ModelUnavailableError(
            f"--model-path {model_path} is an NV-Embed checkpoint; native NV-Embed support is not in this "
            "version of nvrag yet"
        )
    return load_embedder(name, load_options(settings, model_path=model_path, max_length=max_length))


def pinned_model_name(store: Store, index: str, requested: str | None) -> str:
    """The model an existing index was built with; a different explicit request is refused."""
    manifest = store.open(index).manifest
    if requested is not None and requested.strip().lower() != AUTO:
        wanted = get_spec(requested).name
        if wanted != manifest.model:
            raise ModelMismatchError(
                f"index {index!r} was built with {manifest.model}; it cannot be searched or extended with "
                f"{wanted} (a different vector space). Leave out --model to use {manifest.model}, or build a "
                f"new index with {wanted}"
            )
    return manifest.model


def build_indexer(
    settings: Settings,
    store: Store,
    index: str,
    requested_model: str | None,
    chunker: ChunkerSettings | None,
) -> tuple[Indexer, ModelChoice]:
    if store.exists(index):
        name = pinned_model_name(store, index, requested_model)
        choice = ModelChoice(name, f"{name}, the model index {index!r} was built with", get_spec(name).license)
    else:
        choice = choose(settings, requested_model)
    return Indexer(store, load_model(settings, choice.name), chunker=chunker), choice


def build_retriever(settings: Settings, store: Store, index: str, requested_model: str | None) -> Retriever:
    name = pinned_model_name(store, index, requested_model)
    return Retriever(store.open(index), load_model(settings, name))
