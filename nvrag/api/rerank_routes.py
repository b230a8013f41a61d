"""The rerank route: ``POST /v1/rerank`` (also ``/rerank`` and ``/v2/rerank``, the paths vLLM serves), in
Cohere's and Jina's shape, over the served rerankers (``nvrag serve --rerank-model``); and the one rule that
picks a served reranker, which the search route shares."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from nvrag.api.context import APIContext
from nvrag.api.errors import APIError
from nvrag.api.responses import RerankResponse
from nvrag.api.schemas import MAX_INPUT_CHARS, RerankRequest
from nvrag.reranker import Reranker, ranked

RERANK_PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")


def served_reranker(ctx: APIContext, requested: str | bool | None) -> Reranker:
    """The served reranker a request names (None or true: the only one served); 400 where none is served, 404
    for a name not served."""
    if not ctx.rerankers:
        raise APIError(
            400, "this server serves no reranker; start it with --rerank-model DIR_OR_ID", code="no_reranker"
        )
    if requested is None or requested is True:
        if len(ctx.rerankers) > 1:
            raise APIError(400, f"name the reranker: one of {', '.join(ctx.rerankers)}", code="model_required")
        return next(iter(ctx.rerankers.values()))
    if isinstance(requested, str) and requested in ctx.rerankers:
        return ctx.rerankers[requested]
    raise APIError(
        404,
        f"reranker {str(requested)[:200]!r} is not served here; GET /v1/models lists {', '.join(ctx.rerankers)}",
        "not_found_error",
        "model_not_found",
    )


def rerank_router(ctx: APIContext) -> APIRouter:
    router = APIRouter()

    def rerank(body: RerankRequest) -> dict[str, Any]:
        """Score ``documents`` against ``query``: results best first (``index`` is the input position), the
        first ``top_n``, with their text if ``return_documents``."""
        reranker = served_reranker(ctx, body.model)
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        if not texts:
            raise APIError(400, 'documents is empty: give a list of strings or of {"text": ...}', code="empty_input")
        if len(texts) > ctx.max_rerank_documents:
            raise APIError(
                400, f"{len(texts)} documents: the limit is {ctx.max_rerank_documents} per request", code="too_many"
            )
        if any(len(t) > MAX_INPUT_CHARS for t in texts):
            raise APIError(400, f"a document is over {MAX_INPUT_CHARS} characters", code="input_too_long")
        scores, tokens = reranker.score_counted(body.query, texts, body.instruction)
        results = []
        for result in ranked(scores, body.top_n):
            item: dict[str, Any] = {"index": result.index, "relevance_score": result.relevance_score}
            if body.return_documents:
                item["document"] = {"text": texts[result.index]}
            results.append(item)
        return {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": reranker.name,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    for path in RERANK_PATHS:
        router.add_api_route(
            path, rerank, methods=["POST"], response_model=RerankResponse, response_model_exclude_none=True,
            include_in_schema=path == RERANK_PATHS[0],
        )  # fmt: skip
    return router


def reranker_card(reranker: Reranker) -> dict[str, Any]:
    """A served reranker as /v1/models lists it."""
    info = reranker.info
    return {
        "id": info.name,
        "object": "model",
        "created": 0,
        "owned_by": "nvrag",
        "kind": "reranker",
        "reranker": info.kind,
        "score": info.score,
        "max_tokens": info.max_tokens,
        "license": info.license,
    }
