"""`nvrag serve` (the HTTP API for programs: OpenAI-compatible embeddings, search, documents, /mcp) and
`nvrag mcp` (the MCP server for agents, over stdio)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from nvrag.app.cli_common import (
    DbOption,
    DtypeOption,
    ModelOption,
    ModelPathOption,
    QueryDtypeOption,
    app,
    err,
    fail,
    safe,
    user_errors,
)
from nvrag.app.settings import ENV_API_KEY, Settings
from nvrag.app.wiring import build_api_app, build_mcp_server, open_store
from nvrag.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ServedIndexes = Annotated[
    list[str] | None,
    typer.Option("--index", "-i", help="Serve only these indexes (repeat the option); default: every index."),
]


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
            help=f"Require Authorization: Bearer KEY on every route but /health (or set {ENV_API_KEY}).",
            show_default=False,
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option("--insecure-no-auth", help="Allow another address than loopback without an API key."),
    ] = False,
    max_inputs: Annotated[
        int, typer.Option("--max-inputs-per-request", min=1, help="Texts per /v1/embeddings request.")
    ] = 2048,
    ui: Annotated[
        bool,
        typer.Option(
            "--ui", help="Also serve the web search page at /ui (behind the same key: the browser asks for it)."
        ),
    ] = False,
    max_queued: Annotated[
        int,
        typer.Option("--max-queued-requests", min=1, help="Embedding requests waiting per model; beyond it: 429."),
    ] = 256,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    dtype: DtypeOption = None,
    db: DbOption = None,
) -> None:
    """Serve the HTTP API: POST /v1/embeddings (OpenAI-compatible), GET /v1/models, POST /v1/search,
    GET /v1/indexes, documents, GET /health, GET /metrics, and MCP at /mcp. Loopback only by default;
    another address needs --api-key (or --insecure-no-auth). The model (--model, default auto) embeds
    /v1/embeddings and new indexes; each index searches with its own model. Documentation at /docs."""
    with user_errors():
        if host not in LOOPBACK and not api_key and not insecure_no_auth:
            raise ConfigError(
                f"--host {host}: other machines could call the API without a key; give --api-key KEY (or set "
                f"{ENV_API_KEY}), or --insecure-no-auth if that is what you want"
            )
        if api_key is not None and len(api_key) < 16:
            raise ConfigError("--api-key: use at least 16 characters (for example: openssl rand -hex 24)")
        settings = Settings.from_env(db=db, dtype=dtype)
        server = build_api_app(
            settings,
            open_store(settings),
            indexes=index,
            model=model,
            model_path=model_path,
            api_key=api_key,
            max_inputs=max_inputs,
            max_queued=max_queued,
            host=host,
            ui=ui,
        )
    try:
        import uvicorn
    except ImportError:
        raise fail("nvrag serve needs the serve extra: pip install 'nvrag[serve]'") from None
    where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    err.print(f"nvrag API on {safe(where)}/v1 (docs: {safe(where)}/docs; Ctrl-C stops it)")
    if host not in LOOPBACK:
        err.print(f"[yellow]warning:[/] listening on {safe(host)}: other machines can reach this API")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    uvicorn.run(server, host=host, port=port, log_level="warning")


@app.command()
def mcp(
    index: ServedIndexes = None,
    dtype: QueryDtypeOption = None,
    db: DbOption = None,
) -> None:
    """Serve nvrag's tools to an agent over stdio (Model Context Protocol): search, list_indexes,
    get_document. Configure your agent to run `nvrag mcp --index NAME`; nothing but the protocol goes to stdout."""
    with user_errors():
        settings = Settings.from_env(db=db, dtype=dtype)
        server = build_mcp_server(settings, open_store(settings), index)
    server.run("stdio")
