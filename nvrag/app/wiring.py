"""The composition root: the one place that picks backends and models and connects the layers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from nvrag.app.devices import cuda_available
from nvrag.app.settings import Settings
from nvrag.embedder import AUTO, Embedder, LoadOptions, choose_model, get_spec, load_embedder
from nvrag.embedder.checkpoint import MODEL_TYPE_ALIASES
from nvrag.embedder.families import folder_model_name, known_model
from nvrag.embedder.names import LOCAL_PREFIX, MINILM_NAME, NVEMBED_NAME
from nvrag.embedder.pinning import check_pinned, weights_for_index
from nvrag.embedder.registry import ModelRecipe
from nvrag.errors import ConfigError
from nvrag.indexer import Engine, Indexer, IndexRequest
from nvrag.model.decoder_config import FAMILIES
from nvrag.reranker import Reranker, load_reranker
from nvrag.retriever import Retriever, open_retriever
from nvrag.schema import IndexManifest
from nvrag.store import Store

# config.json model_type of a --model-path folder → the registry model that loads it
PATH_KINDS = {"nvembed": NVEMBED_NAME, "bert": MINILM_NAME}
DECODER_TYPES = frozenset(FAMILIES) | frozenset(MODEL_TYPE_ALIASES)


@dataclass(frozen=True)
class ModelChoice:
    name: str
    reason: str
    license: str
    model_path: Path | None = None
    notes: tuple[str, ...] = ()  # the loaded embedder's notes (how it chose its dtype, when worth saying)
    computes: str = ""  # the loaded embedder's dtype and why (Embedder.computes)


def open_store(settings: Settings) -> Store:
    """The data directory's store: LanceDB (default), or FAISS with NVRAG_STORE=faiss (a local directory)."""
    if settings.store not in ("lancedb", "faiss"):
        raise ConfigError(f"NVRAG_STORE={settings.store!r}: use lancedb or faiss")
    from nvrag.store.lancedb_store import LanceStore  # lancedb: only for commands that open a store

    if "://" in settings.db:
        if settings.store == "faiss":
            raise ConfigError("the FAISS store needs a local directory; object-store URIs are for LanceDB")
        return LanceStore(settings.db)
    path = Path(settings.db).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--db {settings.db}: exists and is not a directory; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--db {settings.db}: cannot create the data directory ({exc.strerror or exc}); choose another path"
        ) from None
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"--db {settings.db}: the data directory cannot be read; check its permissions")
    if settings.store == "faiss":
        from nvrag.store.faiss_store import FaissStore

        return FaissStore(path)
    return LanceStore(str(path))


def _nvembed_weights(settings: Settings) -> Path | None:
    if settings.nvembed_path is not None:
        return settings.nvembed_path if (settings.nvembed_path / "config.json").is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(NVEMBED_NAME, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def model_path_kind(model_path: Path) -> str:
    """The model name a checkpoint folder loads as: NV-Embed or the bundled model from config.json's
    ``model_type``; a supported decoder by its hub id (a hub cache snapshot) or as ``local:STYLE/FOLDER``."""
    config = model_path / "config.json"
    if not config.is_file():
        raise ConfigError(f"--model-path {model_path}: no config.json there; give a model checkpoint folder")
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"--model-path {model_path}: cannot read config.json ({exc})") from exc
    if kind in PATH_KINDS:
        return PATH_KINDS[kind]
    if kind in DECODER_TYPES:
        return folder_model_name(model_path)
    raise ConfigError(
        f"--model-path {model_path}: model_type {kind!r} is not supported; nvrag loads NV-Embed checkpoints, "
        f"all-MiniLM-L6-v2 folders and decoder embedders ({', '.join(sorted(DECODER_TYPES))})"
    )


def choose(settings: Settings, requested: str | None, model_path: Path | None = None) -> ModelChoice:
    """Resolve a model request (a name, an alias or ``auto``, and maybe a weights folder), with the reason."""
    wanted = requested or settings.model
    if model_path is not None:
        name = model_path_kind(model_path)
        if wanted.strip().lower() != AUTO:
            spec = get_spec(wanted)
            decoder_folder = name.startswith(LOCAL_PREFIX) or known_model(name) is not None
            if decoder_folder and known_model(spec.name) is not None:
                name = spec.name  # a known hub model's weights in a folder of the user's
            elif spec.name != name:
                raise ConfigError(f"--model {wanted} and --model-path {model_path} (a {name} checkpoint) disagree")
        return ModelChoice(name, f"{name} from {model_path}", get_spec(name).license, model_path)
    if wanted.strip().lower() == AUTO:
        weights = _nvembed_weights(settings)
        name, reason = choose_model(AUTO, cuda_available=cuda_available(), nvembed_weights=weights)
        return ModelChoice(name, reason, get_spec(name).license, weights if name == NVEMBED_NAME else None)
    name, reason = choose_model(wanted, cuda_available=False, nvembed_weights=None)
    return ModelChoice(name, reason, get_spec(name).license)


def load_options(
    settings: Settings,
    model_path: Path | None = None,
    max_length: int | None = None,
    *,
    for_queries: bool = False,
    dimensions: int | None = None,
) -> LoadOptions:
    device = settings.device or ("cuda" if cuda_available() else "cpu")
    return LoadOptions(
        device=device,
        model_path=model_path,
        max_length=max_length,
        dtype=settings.dtype,
        attention=settings.attention,
        devices=settings.devices,
        for_queries=for_queries,
        dimensions=dimensions,
    )


def load_model(
    settings: Settings,
    name: str,
    *,
    model_path: Path | None = None,
    max_length: int | None = None,
    for_queries: bool = False,
    dimensions: int | None = None,
) -> Embedder:
    if model_path is None and name == NVEMBED_NAME:
        model_path = settings.nvembed_path
    options = load_options(settings, model_path, max_length, for_queries=for_queries, dimensions=dimensions)
    return load_embedder(name, options)


def model_recipe(settings: Settings, choice: ModelChoice) -> ModelRecipe:
    """What a Ray worker needs to load the chosen model itself (the same weights and options)."""
    model_path = choice.model_path
    if model_path is None and choice.name == NVEMBED_NAME:
        model_path = settings.nvembed_path
    return ModelRecipe(choice.name, replace(load_options(settings, model_path), devices=()))


def _check_requested(manifest: IndexManifest, requested: str | None, model_path: Path | None, *, writing: bool) -> None:
    """Refuse, before any weights load, an explicit request for a model other than the one the index pins
    (the loaded model's revision is checked once it is loaded: open_run, Retriever)."""
    wanted = model_path_kind(model_path) if model_path is not None else None
    if requested is not None and requested.strip().lower() != AUTO:
        wanted = get_spec(requested).name
    if wanted is not None:
        check_pinned(manifest, wanted, writing=writing)


def index_model(settings: Settings, store: Store, request: IndexRequest) -> ModelChoice:
    """The model an indexing run uses: the index's own (another one only with ``reembed``), or the requested
    (or automatic) choice for a new index."""
    if store.exists(request.index) and not (request.reembed and request.explicit_model):
        manifest = store.manifest(request.index)
        _check_requested(manifest, request.model, request.model_path, writing=True)
        reason = f"{manifest.model}, the model index {request.index!r} was built with"
        weights = weights_for_index(manifest, request.model_path or _configured(settings, manifest.model))
        return ModelChoice(manifest.model, reason, get_spec(manifest.model).license, weights)
    return choose(settings, request.model, request.model_path)


def index_engine(
    settings: Settings, store: Store, request: IndexRequest, on_status: Callable[[str], None] | None = None
) -> tuple[Engine, ModelChoice]:
    """The engine that runs ``request`` (the one place an engine is picked) and the model it loaded."""
    choice = index_model(settings, store, request)
    settings = replace(settings, devices=request.devices)
    dimensions = request.dimensions
    if dimensions is None and store.exists(request.index) and not request.reembed:
        dimensions = store.manifest(request.index).dimension  # a Matryoshka index keeps its cut
    embedder = load_model(settings, choice.name, model_path=choice.model_path, dimensions=dimensions)
    choice = replace(choice, notes=embedder.notes, computes=embedder.computes)
    if request.engine == "ray":
        from nvrag.indexer.ray_engine import RayEngine

        return RayEngine(store, embedder, model_recipe(settings, choice), on_status), choice
    return Indexer(store, embedder), choice


def build_retriever(
    settings: Settings, store: Store, index: str, requested_model: str | None, model_path: Path | None = None
) -> Retriever:
    manifest = store.manifest(index)
    _check_requested(manifest, requested_model, model_path, writing=False)
    weights = weights_for_index(manifest, model_path or _configured(settings, manifest.model))
    return open_retriever(store, index, load_options(settings, weights, for_queries=True))


def load_rerank_model(settings: Settings, name_or_path: str | Path, max_length: int | None = None) -> Reranker:
    """The reranker a folder or known hub id names, on the settings' device, dtype and attention backend."""
    device = settings.device or ("cuda" if cuda_available() else "cpu")
    return load_reranker(
        name_or_path, device=device, dtype=settings.dtype, max_length=max_length, attention=settings.attention
    )


def _configured(settings: Settings, name: str) -> Path | None:
    """The weights folder the settings give for a model (NVRAG_NVEMBED_PATH for NV-Embed)."""
    return settings.nvembed_path if name == NVEMBED_NAME else None
