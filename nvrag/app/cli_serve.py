"""`nvrag serve` (the HTTP API for programs: OpenAI-compatible embeddings, search, documents, /mcp),
`nvrag ui` (the web search page) and `nvrag mcp` (the MCP server for agents, over stdio)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from nvrag.api.limits import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_INPUTS
from nvrag.app.cli_common import (
    EXIT_PORT_IN_USE,
    AllowedHosts,
    AllowedOrigins,
    DbOption,
    DtypeOption,
    ModelMemoryOption,
    ModelOption,
    ModelPathOption,
    QueryDtypeOption,
    RerankModelOption,
    app,
    check_origins,
    err,
    fail,
    require_extra,
    safe,
    user_errors,
)
from nvrag.app.devices import fit_threads, share_cpus
from nvrag.app.serving import build_api_app, build_mcp_server, build_web_app
from nvrag.app.settings import ENV_API_KEY, Settings
from nvrag.app.wiring import load_rerank_model, open_store
from nvrag.embedder.scheduler import DEFAULT_MAX_QUEUE_SECONDS, DEFAULT_MAX_QUEUED, DEFAULT_MAX_QUEUED_TOKENS
from nvrag.errors import ConfigError, NvRagError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ServedIndexes = Annotated[
    list[str] | None,
    typer.Option("--index", "-i", help="Serve only these indexes (repeat the option); default: every index."),
]


SERVE_MODULES = ("fastapi", "uvicorn", "prometheus_client", "mcp")  # the serve extra


@app.command()
def serve(
    index: ServedIndexes = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; the default serves this machine only.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar=ENV_API_KEY,
            help=f"Require Authorization: Bearer KEY on every route but the probes (or set {ENV_API_KEY}).",
            show_default=False,
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option("--insecure-no-auth", help="Allow another address than loopback without an API key."),
    ] = False,
    allowed_host: AllowedHosts = None,
    allowed_origin: AllowedOrigins = None,
    max_inputs: Annotated[
        int, typer.Option("--max-inputs-per-request", min=1, help="Texts per /v1/embeddings request.")
    ] = DEFAULT_MAX_INPUTS,
    ui: Annotated[
        bool,
        typer.Option(
            "--ui",
            help="Also serve the web search page at /ui (behind the same key: the browser asks for it).",
        ),
    ] = False,
    max_in_flight: Annotated[
        int,
        typer.Option("--max-concurrent-requests", min=1, help="Requests answered at once; beyond it: 429."),
    ] = DEFAULT_MAX_IN_FLIGHT,
    max_queued: Annotated[
        int,
        typer.Option("--max-queued-requests", min=1, help="Embedding requests waiting per model; beyond it: 429."),
    ] = DEFAULT_MAX_QUEUED,
    max_queued_tokens: Annotated[
        int,
        typer.Option("--max-queued-tokens", min=1, help="Tokens waiting per model; beyond it: 429."),
    ] = DEFAULT_MAX_QUEUED_TOKENS,
    max_queue_seconds: Annotated[
        float,
        typer.Option(
            "--max-queue-seconds",
            min=0.1,
            help="Work waiting per model, in seconds at its measured speed; beyond: 429.",
        ),
    ] = DEFAULT_MAX_QUEUE_SECONDS,
    max_connections: Annotated[
        int, typer.Option("--max-connections", min=1, help="Open connections; beyond it: 503.")
    ] = DEFAULT_MAX_CONNECTIONS,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    rerank_model: RerankModelOption = None,
    dtype: DtypeOption = None,
    model_memory: ModelMemoryOption = None,
    db: DbOption = None,
) -> None:
    """Serve the HTTP API: POST /v1/embeddings (OpenAI-compatible), POST /v1/rerank (with --rerank-model; Cohere
    and Jina's shape), GET /v1/models, POST /v1/search,
    GET /v1/indexes, documents, GET /health (/ready, /live), GET /metrics, and MCP at /mcp. Loopback only by
    default; another address needs --api-key (or --insecure-no-auth). The model (--model, default auto) embeds
    /v1/embeddings and new indexes; each index searches with its own model. Documentation at /docs."""
    require_extra("serve", "serve", SERVE_MODULES)
    if ui:
        require_extra("serve --ui", "ui", ("gradio",))
    from nvrag.api.runner import PortInUseError, bind
    from nvrag.api.runner import serve as run_server

    with user_errors():
        if host not in LOOPBACK and not api_key and not insecure_no_auth:
            raise ConfigError(
                f"--host {host}: other machines could call the API without a key; give --api-key KEY (or set "
                f"{ENV_API_KEY}), or --insecure-no-auth if that is what you want"
            )
        if api_key is not None and len(api_key) < 16:
            raise ConfigError("--api-key: use at least 16 characters (for example: openssl rand -hex 24)")
        check_origins(allowed_origin)
        try:
            sock = bind(host, port)
        except PortInUseError as exc:
            raise fail(str(exc), EXIT_PORT_IN_USE) from None
        threads, share = share_cpus()
        settings = Settings.from_env(db=db, dtype=dtype, model_memory=model_memory)
        where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{sock.getsockname()[1]}"

        def on_ready(problem: str | None) -> None:
            if problem is None:
                err.print(f"ready: {safe(where)}/v1 answers (every model has run a forward pass)")
            else:
                err.print(f"[bold red]error:[/] not ready: {safe(problem)}")

        server = build_api_app(
            settings,
            open_store(settings),
            indexes=index,
            model=model,
            model_path=model_path,
            api_key=api_key,
            max_inputs=max_inputs,
            max_queued=max_queued,
            max_queued_tokens=max_queued_tokens,
            max_queue_seconds=max_queue_seconds,
            max_in_flight=max_in_flight,
            host=host,
            allowed_hosts=allowed_host or (),
            allowed_origins=allowed_origin or (),
            ui=ui,
            on_ready=on_ready,
            rerank_model=rerank_model,
            say=lambda line: err.print(safe(line)),
            before_pass=None if share is None else fit_threads(share),
        )
    fewer = ", fewer while other processes keep CPUs busy" if share is not None else ""
    err.print(
        f"nvrag API on {safe(where)}/v1, loading its models (docs: {safe(where)}/docs; {threads} compute "
        f"threads{fewer}; Ctrl-C stops it)"
    )
    if host not in LOOPBACK:
        err.print(f"[yellow]warning:[/] listening on {safe(host)}: other machines can reach this API")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    run_server(server, sock, max_connections=max_connections)


@app.command()
def ui(
    index: Annotated[str | None, typer.Option("--index", "-i", help="Index selected when the page opens.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; the default serves this machine only.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7860,
    allowed_host: AllowedHosts = None,
    allowed_origin: AllowedOrigins = None,
    rerank_model: RerankModelOption = None,
    dtype: DtypeOption = None,
    model_memory: ModelMemoryOption = None,
    db: DbOption = None,
) -> None:
    """Start the web search UI (Gradio). Loopback only by default; no public share link.

    Set NVRAG_UI_USER and NVRAG_UI_PASSWORD to require a login. Uploads are limited to .txt, .md and .jsonl
    files of 20 MB and stored, with sanitised names, under the data directory's uploads/ folder. Requests
    that name another Host, or come from a web page of another origin, are refused (see --allowed-host and
    --allowed-origin for a proxy's names).
    """
    require_extra("ui", "ui", ("gradio", "fastapi", "uvicorn"))
    from nvrag.api.runner import PortInUseError, bind
    from nvrag.api.runner import serve as run_server

    with user_errors():
        check_origins(allowed_origin)
        try:
            sock = bind(host, port)  # before anything is announced: a port in use is one line, exit 4
        except PortInUseError as exc:
            raise fail(str(exc), EXIT_PORT_IN_USE) from None
        settings = Settings.from_env(db=db, dtype=dtype, model_memory=model_memory)
        store = open_store(settings)
        if index is not None and not store.exists(index):
            store.open(index)  # raises IndexNotFoundError naming the known indexes
        reranker = load_rerank_model(settings, rerank_model) if rerank_model is not None else None
        server = build_web_app(
            settings,
            store,
            index,
            reranker=reranker,
            say=lambda line: err.print(safe(line)),
            host=host,
            allowed_hosts=allowed_host or (),
            allowed_origins=allowed_origin or (),
        )
    where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{sock.getsockname()[1]}/"
    err.print(f"nvrag UI on {safe(where)} (Ctrl-C stops it)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] listening on {safe(host)}: other machines can reach this UI")
    run_server(server, sock)


@app.command()
def mcp(
    index: ServedIndexes = None,
    rerank_model: RerankModelOption = None,
    dtype: QueryDtypeOption = None,
    model_memory: ModelMemoryOption = None,
    db: DbOption = None,
) -> None:
    """Serve nvrag's tools to an agent over stdio (Model Context Protocol): search, list_indexes,
    get_document. Configure your agent to run `nvrag mcp --index NAME`; nothing but the protocol goes to stdout."""
    from nvrag.integrations.mcp_refusal import refuse_startup

    try:
        require_extra("mcp", "serve", ("mcp",))
    except typer.Exit:
        refuse_startup("the serve extra is missing: pip install 'nvrag[serve]'", sys.stdin, sys.stdout)
        raise
    with user_errors():
        try:
            settings = Settings.from_env(db=db, dtype=dtype, model_memory=model_memory)
            reranker = load_rerank_model(settings, rerank_model) if rerank_model is not None else None
            say = lambda line: err.print(safe(line))  # noqa: E731 - stderr: stdout carries the protocol
            server = build_mcp_server(settings, open_store(settings), index, reranker, say)
        except NvRagError as exc:  # the agent hears it too, as an error answer to its first request
            refuse_startup(str(exc), sys.stdin, sys.stdout)
            raise
    server.run("stdio")
