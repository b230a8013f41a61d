"""The composition root: the one place that picks backends and models and connects the layers."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nvrag.api.limits import DEFAULT_MAX_IN_FLIGHT
from nvrag.app.devices import cuda_available
from nvrag.app.services import Loader, Purpose, Services
from nvrag.app.settings import ENV_UI_PASSWORD, ENV_UI_USER, Settings, default_db
from nvrag.embedder import AUTO, Embedder, LoadOptions, choose_model, get_spec, load_embedder
from nvrag.embedder.checkpoint import MODEL_TYPE_ALIASES
from nvrag.embedder.families import folder_model_name, known_model
from nvrag.embedder.names import LOCAL_PREFIX, MINILM_NAME, NVEMBED_NAME
from nvrag.embedder.pinning import check_pinned, weights_for_index
from nvrag.embedder.registry import ModelRecipe
from nvrag.embedder.scheduler import DEFAULT_MAX_QUEUE_SECONDS, DEFAULT_MAX_QUEUED, DEFAULT_MAX_QUEUED_TOKENS, Scheduler
from nvrag.errors import ConfigError
from nvrag.indexer import Engine, Indexer, IndexRequest
from nvrag.model.decoder_config import FAMILIES
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


def _configured(settings: Settings, name: str) -> Path | None:
    """The weights folder the settings give for a model (NVRAG_NVEMBED_PATH for NV-Embed)."""
    return settings.nvembed_path if name == NVEMBED_NAME else None


def pooled_loader(settings: Settings, wrap: Callable[[Embedder], Embedder] | None = None) -> Loader:
    """How Services loads a model: with these settings, query-only loads for searches, wrapped (a server's
    scheduler) when ``wrap`` is given."""

    def load(name: str, model_path: Path | None, purpose: Purpose) -> Embedder:
        loaded = load_model(settings, name, model_path=model_path, for_queries=purpose == "queries")
        return wrap(loaded) if wrap is not None else loaded

    return load


def build_web_app(
    settings: Settings, store: Store, index: str | None, *, services: Services | None = None, mounted_at: str = ""
) -> Any:
    """The UI's FastAPI app over ``services`` (its own unless given: `nvrag serve --ui` passes the server's, one
    loaded model for the page, the API and MCP, with its mount path; the API key guards it there, so it takes
    no login of its own). Uploads go into existing indexes with the index's model."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
    # Gradio writes what it receives to GRADIO_TEMP_DIR (default: /tmp/gradio, shared by every user of the
    # machine); this server's uploads go to a folder of its own, readable by this user only
    received = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.mkdtemp(prefix="nvrag-received-"))
    os.environ["GRADIO_TEMP_DIR"] = str(received)
    from nvrag.ui import UIContext, build_server

    services = services or Services(settings, store, pooled_loader(settings))
    local = "://" not in settings.db
    uploads = Path(settings.db).expanduser() / "uploads" if local else Path(default_db()) / "uploads"
    ctx = UIContext(
        store=store,
        retriever_for=services.retriever,
        run_index=services.run_index,
        upload_root=uploads,
        received_root=received,
        source_url=f"{mounted_at}/source",
    )
    if mounted_at:
        return build_server(ctx, index)
    user, password = os.environ.get(ENV_UI_USER), os.environ.get(ENV_UI_PASSWORD)
    if bool(user) != bool(password):
        raise ConfigError(f"set both {ENV_UI_USER} and {ENV_UI_PASSWORD} to require a login, or neither")
    return build_server(ctx, index, auth=(user, password) if user and password else None)


def build_api_app(
    settings: Settings,
    store: Store,
    *,
    indexes: Sequence[str] | None,
    model: str | None,
    model_path: Path | None,
    api_key: str | None,
    max_inputs: int,
    max_queued: int = DEFAULT_MAX_QUEUED,
    max_queued_tokens: int = DEFAULT_MAX_QUEUED_TOKENS,
    max_queue_seconds: float = DEFAULT_MAX_QUEUE_SECONDS,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
    ui: bool = False,
    on_ready: Callable[[str | None], None] | None = None,
) -> Any:
    """The HTTP API's FastAPI app: one loaded embedder per model behind one scheduler, shared by
    /v1/embeddings and the searches of every index built with it; the models warm up in the background
    (/ready says 503 until each has run a forward pass)."""
    from nvrag.api import APIContext, build_api
    from nvrag.api.guard import allowed_hosts as hosts_for
    from nvrag.api.metrics import Metrics

    for name in indexes or ():
        store.open(name)  # IndexNotFoundError naming the known ones
    served = choose(settings, model, model_path)
    index_models = {store.manifest(n).model for n in (indexes or store.list_indexes())}
    metrics = Metrics()

    def scheduled(loaded: Embedder) -> Embedder:
        # one scheduler per model: every route's embedding work shares its batches
        bounds = (max_queued, max_queued_tokens, max_queue_seconds)
        return metrics.watch(
            Scheduler(loaded, max_queued=bounds[0], max_queued_tokens=bounds[1], max_queue_seconds=bounds[2])
        )

    services = Services(
        settings, store, pooled_loader(settings, scheduled), served=(served.name, served.model_path),
        indexes=indexes, shared=True,
    )  # fmt: skip
    ctx = APIContext(
        store=store,
        models=[served.name, *sorted(index_models - {served.name})],
        embedder_for=services.embedder,
        retriever_for=services.retriever,
        run_index=services.run_index,
        delete_documents=services.delete_documents,
        indexes=services.indexes,
        api_key=api_key,
        max_inputs=max_inputs,
        allowed_hosts=hosts_for(host, allowed_hosts),
        allowed_origins=frozenset(allowed_origins),
        max_in_flight=max_in_flight,
        on_ready=on_ready,
        metrics=metrics,
    )
    app = build_api(ctx)
    from nvrag.integrations.mcp import MCPContext, build_mcp

    agents = build_mcp(MCPContext(store, services.retriever, services.indexes))
    # the MCP endpoint, behind the same key (the API's middleware sees every request); its sessions need the
    # parent's lifespan, which a mounted app does not get on its own
    # the API's BrowserGuard checks Host and Origin for every route, /mcp included, against --allowed-host and
    # --allowed-origin: MCP's own check (loopback names only) would refuse the names the user allowed
    from mcp.server.transport_security import TransportSecuritySettings

    unguarded = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app.mount("/mcp", agents.streamable_http_app(streamable_http_path="/", transport_security=unguarded))
    web: Any = None
    if ui:
        selected = indexes[0] if indexes else None
        web = build_web_app(settings, store, selected, services=services, mounted_at="/ui")
        app.mount("/ui", web)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        import anyio.to_thread

        # every admitted request gets a thread at once: waiting happens in the scheduler, where it is bounded
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, max_in_flight + 8)
        threading.Thread(target=ctx.warm, name="nvrag-warm-up", daemon=True).start()
        # mounted apps get no lifespan of their own: run MCP's session manager and Gradio's queue from here
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(agents.session_manager.run())
            if web is not None:
                await stack.enter_async_context(web.router.lifespan_context(web))
            yield

    app.router.lifespan_context = lifespan
    return app


def build_mcp_server(settings: Settings, store: Store, indexes: Sequence[str] | None) -> Any:
    """The MCP server of `nvrag mcp` (stdio): each index searched with its own model, loaded once."""
    from nvrag.integrations.mcp import MCPContext, build_mcp

    for name in indexes or ():
        store.open(name)  # IndexNotFoundError naming the known ones
    services = Services(settings, store, pooled_loader(settings), indexes=indexes)
    return build_mcp(MCPContext(store, services.retriever, services.indexes))
