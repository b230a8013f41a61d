"""The HTTP API (FastAPI): OpenAI-compatible embeddings and models, search and index listings over nvrag's
own types. It knows nothing of LanceDB: it reads indexes through the Store interface and searches through
Retrievers, as every other caller does.

Routes: ``GET /health`` and ``GET /ready`` (200 once every served model has run a forward pass, 503 before),
``GET /live`` (200 while the process runs), ``GET /metrics`` (Prometheus), ``GET /v1/models``,
``POST /v1/embeddings``, ``POST /v1/rerank`` (rerank_routes.py), ``POST /v1/search``, ``GET /v1/indexes``,
``GET /v1/indexes/{name}``, ``DELETE /v1/indexes/{name}``, ``POST /v1/indexes/{name}/documents``,
``DELETE /v1/indexes/{name}/documents/{id}``.
With an API key, every route but the probes needs ``Authorization: Bearer KEY``. Errors come in OpenAI's
shape (``nvrag.api.errors``). What a request must be before a route sees it (Host, Origin, JSON bodies, the
key, admission) is ``nvrag.api.guard``'s.

Model routes are plain functions run in the thread pool, so forward passes never block the event loop; the
probes and /metrics run on the loop itself and never wait behind them. Wiring wraps each model in a Scheduler
(``nvrag.embedder.scheduler``): every route's embedding work shares that model's batches, large requests cut
into slices so small ones never wait long, behind bounded queues (429 when they are full).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from nvrag import __version__
from nvrag.api import responses as out
from nvrag.api.context import APIContext
from nvrag.api.errors import APIError, error_body, for_domain_error
from nvrag.api.guard import Admission, BrowserGuard, KeyRequired
from nvrag.api.limits import (
    DEFAULT_DOCUMENTS_LISTED,
    MAX_BODY_BYTES,
    MAX_DOCUMENTS_LISTED,
)
from nvrag.api.metrics import CONTENT_TYPE_LATEST, Metrics
from nvrag.api.rerank_routes import rerank_router, reranker_card, served_reranker
from nvrag.api.schemas import MAX_INPUT_CHARS, DocumentIn, EmbeddingsRequest, SearchRequest
from nvrag.embedder import Embedder, get_spec, resolve_instruction
from nvrag.embedder.matryoshka import cut
from nvrag.errors import NvRagError, OverloadedError
from nvrag.indexer import IndexRequest, ItemsSource, reading
from nvrag.indexer.engine import delete_documents
from nvrag.indexer.loaders import API_SOURCE_PREFIX, ORIGIN_API
from nvrag.indexer.manage import drop_index, list_documents
from nvrag.retriever import parse_filters
from nvrag.schema import Document
from nvrag.store import check_index_name
from nvrag.store.visibility import check_visible, visible_indexes


def build_api(ctx: APIContext, lifespan: Lifespan | None = None) -> FastAPI:
    """The API over ``ctx``; ``lifespan``: what runs while the server does (the composition root's: warming up,
    the mounted apps' own lifespans), given to FastAPI."""
    app = FastAPI(
        title="nvrag", version=__version__, docs_url="/docs", redoc_url=None, responses=out.ERROR_RESPONSES,
        lifespan=lifespan,
    )  # fmt: skip
    _handlers(app)

    # the probes and /metrics are coroutines: they run on the event loop, never behind model work in the pool
    @app.get("/health", response_model=out.Ready)
    @app.get("/ready", response_model=out.Ready)
    async def ready() -> JSONResponse:
        if ctx.failed is not None:
            return JSONResponse(error_body(ctx.failed, "service_unavailable_error", "not_ready"), 503)
        if not ctx.ready.is_set():
            message = "loading the models and running a first forward pass; retry shortly"
            return JSONResponse(error_body(message, "service_unavailable_error", "loading"), 503)
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/live", response_model=out.Live)
    async def live() -> JSONResponse:
        return JSONResponse({"status": "alive", "ready": ctx.ready.is_set(), "version": __version__})

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics() -> Response:
        """Prometheus exposition: requests, latencies, queues, tokens, refusals."""
        return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=out.ModelList, response_model_exclude_none=True)
    def models() -> dict[str, Any]:
        cards = [_model_card(name) for name in ctx.models] + [reranker_card(r) for r in ctx.rerankers.values()]
        return {"object": "list", "data": cards}

    app.include_router(rerank_router(ctx))

    @app.post("/v1/embeddings", response_model=out.EmbeddingsResponse)
    def embeddings(body: EmbeddingsRequest) -> dict[str, Any]:
        name = _served(ctx, body.model)
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise APIError(400, "input is empty: give a string or a list of strings", code="empty_input")
        if len(texts) > ctx.max_inputs:
            raise APIError(400, f"{len(texts)} inputs: the limit is {ctx.max_inputs} per request", code="too_many")
        if any(len(t) > MAX_INPUT_CHARS for t in texts):
            raise APIError(400, f"an input is over {MAX_INPUT_CHARS} characters", code="input_too_long")
        embedder = ctx.embedder_for(name)
        dimensions = body.dimensions if body.dimensions != embedder.dimension else None
        if dimensions is not None and not (embedder.info.matryoshka and dimensions <= embedder.dimension):
            why = (
                f"{name} vectors can be cut to 1 to {embedder.dimension} dimensions"
                if embedder.info.matryoshka
                else f"{name} was not trained for truncated embeddings: leave out dimensions (it returns "
                f"{embedder.dimension})"
            )
            raise APIError(400, why, code="unsupported_dimensions")
        if body.input_type == "document" and (body.task or body.instruction):
            raise APIError(400, "task and instruction apply to queries: add input_type=query", code="invalid_value")
        instruction = resolve_instruction(body.task, body.instruction) if body.input_type == "query" else None
        prefix = embedder.query_prefix(instruction) if body.input_type == "query" else embedder.info.document_template
        if not body.truncate:
            _refuse_long(embedder, texts, prefix)
        vectors, tokens = embedder.embed_counted(texts, prefix)
        if dimensions is not None:
            vectors = cut(vectors, dimensions)  # Matryoshka: the leading dimensions, normalised again
        ctx.metrics.inputs.observe(len(texts))
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": name, "usage": usage}

    @app.post("/v1/search", response_model=out.SearchResponse, response_model_exclude_none=False)
    def search(body: SearchRequest) -> dict[str, Any]:
        _exposed(ctx, body.index)
        if not body.query.strip():
            raise APIError(400, "the query is empty", code="empty_query")
        retriever = ctx.retriever_for(body.index)
        filters = [body.filter] if isinstance(body.filter, str) else list(body.filter or [])
        reranker = served_reranker(ctx, body.rerank) if body.rerank is not False else None
        hits = retriever.search(
            body.query,
            body.k,
            instruction=resolve_instruction(body.task, body.instruction),
            mode=body.mode,
            filters=parse_filters(filters),
            min_score=body.min_score,
            mmr_lambda=body.mmr,
            reranker=reranker,
            rerank_depth=body.rerank_depth,
            rerank_instruction=body.rerank_instruction,
        )
        reranked = {"reranker": reranker.name} if reranker is not None else {}
        return {"index": body.index, "model": retriever.embedder.name, **reranked, "hits": [h.to_dict() for h in hits]}

    @app.get("/v1/indexes", response_model=out.IndexList)
    def indexes() -> dict[str, Any]:
        names = visible_indexes(ctx.store, ctx.indexes)
        return {"object": "list", "data": [_index_card(ctx, n) for n in names]}

    @app.get("/v1/indexes/{name}", response_model=out.IndexCard)
    def index(name: str) -> dict[str, Any]:
        _exposed(ctx, name)
        return _index_card(ctx, name)

    @app.get("/v1/indexes/{name}/documents", response_model=out.DocumentPage)
    def list_index_documents(
        name: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_DOCUMENTS_LISTED)] = DEFAULT_DOCUMENTS_LISTED,
    ) -> dict[str, Any]:
        """The index's documents, sorted by id, a page at a time: id, origin (path, api or upload), source, number
        of chunks and updated (when it last changed, ISO 8601 UTC; null for chunks written before nvrag recorded
        it)."""
        _exposed(ctx, name)
        page = list_documents(ctx.store, name, offset, limit)
        return {"object": "list", "data": [d.to_dict() for d in page], "offset": offset, "limit": limit}

    documents_body = {"type": "array", "items": DocumentIn.model_json_schema(), "maxItems": ctx.max_inputs}

    @app.post(
        "/v1/indexes/{name}/documents",
        response_model=out.IndexReportResponse,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": documents_body}}}},
    )
    async def add_documents(name: str, request: Request, replace_other_origins: bool = False) -> dict[str, Any]:
        """Index ``[{"id", "text", "title"?, "metadata"?}]`` into ``name`` (created if missing): documents
        already there with the same text are unchanged, changed ones replaced; `nvrag index --json`'s report.
        A document of the same id added another way (from PATH by `nvrag index`, or uploaded in the page) is
        kept and reported as failed, unless ``replace_other_origins=true``."""
        if ctx.run_index is None:
            raise APIError(403, "this server does not write indexes", "permission_error", "read_only")
        if ctx.indexes is not None and name not in ctx.indexes:
            _exposed(ctx, name)
        check_index_name(name)
        documents = _documents(await request.body(), ctx.max_inputs)
        items = [Document(d.id, d.text, f"{API_SOURCE_PREFIX}{d.id}", d.title, dict(d.metadata)) for d in documents]
        run = ctx.run_index
        request_ = IndexRequest(name, ItemsSource(items, api=True), replace_other_origins=replace_other_origins)
        report = await run_in_threadpool(lambda: run(request_))
        return report.to_dict()

    @app.delete("/v1/indexes/{name}/documents/{doc_id}", response_model=out.DocumentDeleted)
    def delete_document(name: str, doc_id: str, replace_other_origins: bool = False) -> dict[str, Any]:
        """Remove a document added through the API (another origin's only with ``replace_other_origins``)."""
        if ctx.run_index is None:
            raise APIError(403, "this server does not write indexes", "permission_error", "read_only")
        _exposed(ctx, name)
        origins = None if replace_other_origins else {ORIGIN_API}
        if ctx.delete_documents is not None:
            removed = ctx.delete_documents(name, [doc_id], origins)
        else:
            removed = delete_documents(ctx.store, name, [doc_id], origins=origins)
        if removed == 0:
            raise APIError(404, f"index {name!r} has no document {doc_id!r}", "not_found_error", "document_not_found")
        return {"index": name, "id": doc_id, "deleted": True, "chunks_removed": removed}

    @app.delete("/v1/indexes/{name}", response_model=out.IndexDropped)
    def drop(name: str, replace_other_origins: bool = False) -> dict[str, Any]:
        """Remove an index (refused with 409 while another process writes it). An index holding documents
        added another way (from PATH, or uploaded in the page) is dropped only with ``replace_other_origins``."""
        if ctx.run_index is None:
            raise APIError(403, "this server does not write indexes", "permission_error", "read_only")
        _exposed(ctx, name)
        if not replace_other_origins:
            others = Counter(d.origin for d in list_documents(ctx.store, name) if d.origin != ORIGIN_API)
            if others:
                held = ", ".join(f"{n} from {origin}" for origin, n in sorted(others.items()))
                raise APIError(
                    400,
                    f"index {name!r} holds documents added another way ({held}); add ?replace_other_origins=true "
                    "to drop it anyway",
                    code="other_origins",
                )
        rows = ctx.drop_index(name) if ctx.drop_index is not None else drop_index(ctx.store, name)
        return {"index": name, "dropped": True, "rows_removed": rows}

    # added innermost first: a request meets the metrics, the guard, CORS, the key and then admission
    refused = ctx.metrics.refused
    app.add_middleware(
        Admission, max_in_flight=ctx.max_in_flight, max_body_bytes=MAX_BODY_BYTES,
        on_refused=lambda reason: refused.labels(reason).inc(),
    )  # fmt: skip
    app.add_middleware(KeyRequired, key=ctx.api_key)  # before any body is read or validated
    if ctx.allowed_origins:  # no CORS unless origins are named
        app.add_middleware(
            CORSMiddleware, allow_origins=sorted(ctx.allowed_origins), allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"], max_age=600,
        )  # fmt: skip
    app.add_middleware(BrowserGuard, hosts=ctx.allowed_hosts, origins=ctx.allowed_origins)
    app.add_middleware(_Measured, metrics=ctx.metrics)
    return app


class _Measured:
    """The metrics middleware as Starlette middleware (outermost: it also counts refused bodies)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._measured = metrics.middleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._measured(scope, receive, send)


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _handlers(app: FastAPI) -> None:
    def respond(status: int, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(body, status_code=status)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return respond(exc.status, error_body(exc.message, exc.kind, exc.code))

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NvRagError)
        status, body = for_domain_error(exc)
        if isinstance(exc, OverloadedError):
            return JSONResponse(body, status_code=status, headers={"Retry-After": str(exc.retry_after)})
        return respond(status, body)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg", "invalid body"))
        return respond(422, error_body(message, "invalid_request_error", "invalid_body"))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"no route {request.method} {request.url.path}; the routes are listed at /docs"
        return respond(exc.status_code, error_body(message, "invalid_request_error", None))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return respond(500, error_body("internal error; see the server log", "server_error", None))

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        APIError: api_error,
        NvRagError: domain_error,
        RequestValidationError: invalid,
        StarletteHTTPException: http_error,
        Exception: unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)


def _refuse_long(embedder: Embedder, texts: list[str], prefix: str) -> None:
    """``truncate: false``: refuse a text that the model would cut, naming it and the limit."""
    limit = embedder.info.max_tokens
    room = limit - embedder.special_tokens - (len(embedder.token_spans(prefix)) if prefix else 0)
    for i, text in enumerate(texts):
        if len(embedder.token_spans(text)) > room:
            raise APIError(
                400,
                f"input {i} is longer than {embedder.name}'s {limit} tokens; shorten it or send truncate: true",
                code="input_too_long",
            )


_DOCUMENTS = TypeAdapter(list[DocumentIn])


def _documents(body: bytes, limit: int) -> list[DocumentIn]:
    """The documents of a request body: JSON nested at most reading.MAX_JSON_DEPTH levels, at most ``limit``."""
    try:
        value = reading.loads_json(body)
    except ValueError as exc:  # malformed JSON, or nested too deep
        raise APIError(400, f"the body is not a JSON array of documents ({exc})", code="invalid_body") from None
    if isinstance(value, list) and len(value) > limit:
        raise APIError(400, f"{len(value)} documents: the limit is {limit} per request", code="too_many")
    try:
        return _DOCUMENTS.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise APIError(422, f"{where or 'body'}: {first['msg']}", code="invalid_body") from None


def _served(ctx: APIContext, requested: str) -> str:
    """The registry name of a served model (an alias is accepted); 404 for any other."""
    try:
        name = get_spec(requested).name
    except NvRagError:
        name = requested
    if name not in ctx.models:
        raise APIError(
            404,
            f"model {requested!r} is not served here; GET /v1/models lists {', '.join(ctx.models)}",
            "not_found_error",
            "model_not_found",
        )
    return name


def _exposed(ctx: APIContext, name: str) -> None:
    check_visible(ctx.store, ctx.indexes, name)


def _model_card(name: str) -> dict[str, Any]:
    spec = get_spec(name)
    return {
        "id": spec.name,
        "object": "model",
        "created": 0,
        "owned_by": "nvrag",
        "kind": "embedding",
        "dimension": spec.dimension,
        "max_tokens": spec.max_tokens,
        "license": spec.license,
    }


def _index_card(ctx: APIContext, name: str) -> dict[str, Any]:
    table = ctx.store.open(name)
    m = table.manifest
    return {"name": name, "model": m.model, "dimension": m.dimension, "rows": table.count(), "manifest": m.to_dict()}


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # OpenAI's form: little-endian float32 bytes, base64
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
