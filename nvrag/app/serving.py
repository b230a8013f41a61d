"""The serving processes' composition: the web page, the HTTP API (with MCP and the page mounted) and the MCP
server, each over one ``Services`` (its model and retriever pools), from the parts ``wiring`` picks."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from nvrag.api.limits import DEFAULT_MAX_IN_FLIGHT
from nvrag.app import received as received_folders
from nvrag.app.services import Loader, Purpose, Services
from nvrag.app.settings import ENV_UI_PASSWORD, ENV_UI_USER, Settings, default_db
from nvrag.app.wiring import choose, load_model, load_rerank_model
from nvrag.embedder import Embedder
from nvrag.embedder.scheduler import DEFAULT_MAX_QUEUE_SECONDS, DEFAULT_MAX_QUEUED, DEFAULT_MAX_QUEUED_TOKENS, Scheduler
from nvrag.errors import ConfigError, NvRagError
from nvrag.reranker import Reranker
from nvrag.reranker.scheduler import RerankScheduler
from nvrag.store import Store


def pooled_loader(settings: Settings, wrap: Callable[[Embedder], Embedder] | None = None) -> Loader:
    """How Services loads a model: with these settings, query-only loads for searches, wrapped (a server's
    scheduler) when ``wrap`` is given."""

    def load(name: str, model_path: Path | None, purpose: Purpose) -> Embedder:
        loaded = load_model(settings, name, model_path=model_path, for_queries=purpose == "queries")
        return wrap(loaded) if wrap is not None else loaded

    return load


MODEL_MEMORY_SHARE = 0.8  # of this process's memory, for the loaded models, when no budget is given


def model_budget(settings: Settings) -> int | None:
    """The model pool's memory budget in bytes: --model-memory / NVRAG_MODEL_MEMORY, else a share of the memory
    this process may use (a container's limit included); None where that cannot be read."""
    if settings.model_memory is not None:
        return int(settings.model_memory * 2**30)
    from nvrag.embedder.dtypes import memory_bytes

    total = memory_bytes()
    return None if total is None else int(total * MODEL_MEMORY_SHARE)


def pooled_services(settings: Settings, store: Store, load: Loader, **options: Any) -> Services:
    """Services with the settings' model budget: a budget the user gave refuses a model over it, the default
    one loads such a model alone."""
    refuse = settings.model_memory is not None
    return Services(settings, store, load, max_model_bytes=model_budget(settings), refuse_oversized=refuse, **options)


def build_web_app(
    settings: Settings,
    store: Store,
    index: str | None,
    *,
    services: Services | None = None,
    mounted_at: str = "",
    reranker: Reranker | None = None,
    say: Callable[[str], None] | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> Any:
    """The UI's FastAPI app over ``services`` (its own unless given: `nvrag serve --ui` passes the server's, one
    loaded model for the page, the API and MCP, with its mount path; the API key and the API's browser guard
    cover it there, so it takes no login of its own). Uploads go into existing indexes with the index's model.

    On its own (`nvrag ui`, bound to ``host``) the page is guarded like the API: a request must name this server
    in its Host header (DNS rebinding) and one from a web page of another origin is refused, reads included
    (Gradio answers any localhost page's reads with CORS, and its upload route takes a form any page can post)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
    # Gradio writes what it receives to GRADIO_TEMP_DIR (default: /tmp/gradio, shared by every user of the
    # machine); this server's uploads go to a folder of its own, readable by this user only, removed when the
    # process ends (the uploads it indexed are kept under the data directory; these are the bytes as received)
    given = os.environ.get("GRADIO_TEMP_DIR")
    if not given:
        received_folders.sweep()  # the folders of servers that were killed
    received = Path(given) if given else received_folders.own_folder()
    os.environ["GRADIO_TEMP_DIR"] = str(received)
    from nvrag.ui import UIContext, build_server

    if services is None:
        services = pooled_services(settings, store, pooled_loader(settings))
        if say is not None:
            announce(services, reranker, say)
    local = "://" not in settings.db
    uploads = Path(settings.db).expanduser() / "uploads" if local else Path(default_db()) / "uploads"
    ctx = UIContext(
        store=store,
        retriever_for=services.retriever,
        run_index=services.run_index,
        delete_documents=services.delete_documents,
        upload_root=uploads,
        received_root=received,
        source_url=f"{mounted_at}/source",
        reranker=reranker,
    )
    if mounted_at:
        return build_server(ctx, index)
    user, password = os.environ.get(ENV_UI_USER), os.environ.get(ENV_UI_PASSWORD)
    if bool(user) != bool(password):
        raise ConfigError(f"set both {ENV_UI_USER} and {ENV_UI_PASSWORD} to require a login, or neither")
    from nvrag.api.guard import BrowserGuard
    from nvrag.api.guard import allowed_hosts as hosts_for

    app = build_server(ctx, index, auth=(user, password) if user and password else None)
    hosts = hosts_for(host, allowed_hosts)
    app.add_middleware(BrowserGuard, hosts=hosts, origins=frozenset(allowed_origins), page=True)
    return app


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
    rerank_model: str | Path | None = None,
    say: Callable[[str], None] | None = None,
    before_pass: Callable[[], object] | None = None,
) -> Any:
    """The HTTP API's FastAPI app: one loaded embedder per model behind one scheduler, shared by
    /v1/embeddings and the searches of every index built with it; the reranker (``rerank_model``) behind its
    own, shared by /v1/rerank and reranked searches (the API's, MCP's and the page's); the models warm up in the
    background (/ready says 503 until each has run a forward pass). ``before_pass``: run by the schedulers'
    workers before each forward pass (``devices.fit_threads``)."""
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
            Scheduler(
                loaded,
                max_queued=bounds[0],
                max_queued_tokens=bounds[1],
                max_queue_seconds=bounds[2],
                before_pass=before_pass,
            )
        )

    load = pooled_loader(settings, scheduled)
    services = pooled_services(
        settings, store, load, served=(served.name, served.model_path), indexes=indexes, shared=True
    )
    reranker = None
    if rerank_model is not None:
        loaded = load_rerank_model(settings, rerank_model)
        scheduler = RerankScheduler(
            loaded,
            max_queued=max_queued,
            max_queued_tokens=max_queued_tokens,
            max_queue_seconds=max_queue_seconds,
            before_pass=before_pass,
        )
        reranker = metrics.watch(scheduler)
    ctx = APIContext(
        store=store,
        models=[served.name, *sorted(index_models - {served.name})],
        embedder_for=services.embedder,
        retriever_for=services.retriever,
        run_index=services.run_index,
        delete_documents=services.delete_documents,
        drop_index=services.drop_index,
        indexes=services.indexes,
        api_key=api_key,
        max_inputs=max_inputs,
        allowed_hosts=hosts_for(host, allowed_hosts),
        allowed_origins=frozenset(allowed_origins),
        max_in_flight=max_in_flight,
        on_ready=lambda problem: _ready(problem, services, reranker, on_ready, say),
        metrics=metrics,
        rerankers={reranker.name: reranker} if reranker is not None else {},
    )
    from nvrag.integrations.mcp import MCPContext, build_mcp

    agents = build_mcp(MCPContext(store, services.retriever, services.indexes, reranker))
    web: Any = None
    if ui:
        selected = indexes[0] if indexes else None
        web = build_web_app(settings, store, selected, services=services, mounted_at="/ui", reranker=reranker)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
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

    app = build_api(ctx, lifespan=lifespan)
    # the MCP endpoint, behind the same key (the API's middleware sees every request); its sessions need the
    # parent's lifespan, which a mounted app does not get on its own
    # the API's BrowserGuard checks Host and Origin for every route, /mcp included, against --allowed-host and
    # --allowed-origin: MCP's own check (loopback names only) would refuse the names the user allowed
    from mcp.server.transport_security import TransportSecuritySettings

    unguarded = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app.mount("/mcp", agents.streamable_http_app(streamable_http_path="/", transport_security=unguarded))
    if web is not None:
        app.mount("/ui", web)
    return app


def build_mcp_server(
    settings: Settings,
    store: Store,
    indexes: Sequence[str] | None,
    reranker: Reranker | None = None,
    say: Callable[[str], None] | None = None,
) -> Any:
    """The MCP server of `nvrag mcp` (stdio): each index searched with its own model, loaded once; ``reranker``
    lets its search tool rerank."""
    from nvrag.integrations.mcp import MCPContext, build_mcp

    for name in indexes or ():
        store.open(name)  # IndexNotFoundError naming the known ones
    services = pooled_services(settings, store, pooled_loader(settings), indexes=indexes)
    if say is not None:
        announce(services, reranker, say)
    return build_mcp(MCPContext(store, services.retriever, services.indexes, reranker))


def model_line(embedder: Embedder) -> str:
    """``model: NAME, computing in DTYPE (why)``: the line every command prints for a model it loaded."""
    return f"model: {embedder.name}, computing in {embedder.computes}"


def reranker_model_line(reranker: Reranker) -> str:
    """``reranker: NAME (KIND, license L), computing in DTYPE (why); score: WHAT``, then its notes, a line each:
    what every command that loads a reranker prints (the CLI's escaped for its console)."""
    info = reranker.info
    head = f"reranker: {info.name} ({info.kind}, license {info.license}), computing in {reranker.computes}"
    return "\n".join([f"{head}; score: {info.score}", *reranker.notes])


def _ready(
    problem: str | None,
    services: Services,
    reranker: Reranker | None,
    on_ready: Callable[[str | None], None] | None,
    say: Callable[[str], None] | None,
) -> None:
    """Once warmed up: the model lines of what was loaded, the caller's readiness callback, then each model
    prepared for many requests (prepacked weights on a CPU in bfloat16 or int8), a line each, while requests are
    served."""
    if problem is None and say is not None:
        for embedder in services.loaded():
            say(model_line(embedder))
        if reranker is not None:
            say(reranker_model_line(reranker))
    if on_ready is not None:
        on_ready(problem)
    if problem is None:  # a server answers many requests: what pays back over them, while it answers
        prepare_for_serving([*services.loaded(), *optional(reranker)], say)


def optional(reranker: Reranker | None) -> list[Reranker]:
    """The reranker as a list of models: itself, or none."""
    return [] if reranker is None else [reranker]


def first_pass(model: Embedder | Reranker) -> None:
    """One pass through a model just prepared, through its own queue where it has one: the first use of its new
    kernels costs a one-time set-up (oneDNN's, for prepacked weights: 0.3-1.5 s at NV-Embed-v2's real shape on
    2 cores), paid here rather than by the first request after."""
    if isinstance(model, Reranker):
        model.score("warm-up", ["warm-up"])
    else:
        model.embed_queries(["warm-up"])


def prepare_for_serving(models: Sequence[Embedder | Reranker], say: Callable[[str], None] | None) -> None:
    """Each model (embedders and the reranker) prepared for many requests (``prepare_for_serving``) and, where
    something was done, run once (``first_pass``), a line each; a failure there costs only the speed-up, so it
    is a line too, never the server."""
    for model in models:
        try:
            line = model.prepare_for_serving()
        except Exception as exc:  # the model still serves as loaded
            line = f"{model.name}: not prepared for serving ({type(exc).__name__}: {exc}); it serves as loaded"
        else:
            if line is not None:
                with contextlib.suppress(Exception):  # (unloaded meanwhile: the next request meets the reason)
                    first_pass(model)
        if line is not None and say is not None:
            say(line)
    # everything loaded so far (modules, models, tokenizers, the app) lives as long as the process: frozen,
    # the collector's full passes skip it. Unfrozen, each full pass walked all of it with the GIL held, about
    # every 3 s under load, stalling every request and forward pass for 0.2 s (the bundled model at 32 clients)
    gc.freeze()


def announce(services: Services, reranker: Reranker | None, say: Callable[[str], None]) -> None:
    """Load each served index's query model in the background (the first search then waits for nothing) and
    say, for each, which model computes its queries in which dtype and why; a failure is one line too. Then,
    as `serve` does once ready, prepare each model for many requests (Embedder.prepare_for_serving)."""

    def run() -> None:
        loaded = []
        for name in services.visible():
            try:
                embedder = services.retriever(name).embedder
            except NvRagError as exc:
                say(f"index {name}: {exc}")
                continue
            say(f"index {name}: {model_line(embedder)}")
            loaded.append(embedder)
        if reranker is not None:
            say(reranker_model_line(reranker))
        prepare_for_serving([*loaded, *optional(reranker)], say)

    threading.Thread(target=run, name="nvrag-announce", daemon=True).start()
