"""Response bodies of the HTTP API (pydantic): what every route answers, so the OpenAPI schema at /docs
documents each response and FastAPI checks each answer against it. Search hits, stored documents and the
manifest are the domain's own dataclasses (``nvrag.schema``, ``nvrag.indexer.manage``): one definition for the
CLI's ``--json`` and the API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from nvrag.indexer.manage import StoredDocument
from nvrag.schema import Hit, IndexManifest


class ErrorDetail(BaseModel):
    message: str = Field(description="what went wrong and what to do, in one line")
    type: str = Field(description="OpenAI's error type: invalid_request_error, not_found_error, rate_limit_error, ...")
    code: str | None = Field(description="nvrag's code for the case: empty_input, index_not_found, queue_full, ...")
    param: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape (429 also sends Retry-After)."""

    error: ErrorDetail


class Ready(BaseModel):
    status: Literal["ok"]
    version: str


class Live(BaseModel):
    status: Literal["alive"]
    ready: bool = Field(description="whether /ready answers 200")
    version: str


class ModelCard(BaseModel):
    """A served model: an embedder (``kind`` embedding) or a reranker (``kind`` reranker)."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "nvrag"
    kind: Literal["embedding", "reranker"]
    dimension: int | None = Field(default=None, description="embedders: the vectors' dimension")
    max_tokens: int | None = Field(default=None, description="the longest input in tokens (longer ones are cut)")
    license: str
    reranker: str | None = Field(default=None, description="rerankers: the kind (cross-encoder, LLM, ...)")
    score: str | None = Field(default=None, description="rerankers: what the relevance score is")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="the input's position")
    embedding: list[float] | str = Field(description="floats, or base64 little-endian float32 (encoding_format)")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="model input tokens, special tokens included, after truncation")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class SearchResponse(BaseModel):
    index: str
    model: str = Field(description="the model that embedded the query (the index's)")
    reranker: str | None = Field(default=None, description="the reranker, for a reranked search")
    hits: list[Hit]


class IndexCard(BaseModel):
    name: str
    model: str
    dimension: int
    rows: int = Field(description="stored chunks")
    manifest: IndexManifest


class IndexList(BaseModel):
    object: Literal["list"] = "list"
    data: list[IndexCard]


class DocumentPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[StoredDocument]
    offset: int
    limit: int


class Failure(BaseModel):
    source: str
    reason: str


class IndexReportResponse(BaseModel):
    """What an indexing run did (`nvrag index --json`'s report)."""

    index: str
    documents: int
    chunks_added: int
    chunks_unchanged: int
    chunks_removed: int
    documents_removed: int
    failed: int
    reembedded: bool
    interrupted: bool
    failures: list[Failure]
    skipped: dict[str, int]
    not_in_path: int


class DocumentDeleted(BaseModel):
    index: str
    id: str
    deleted: Literal[True]
    chunks_removed: int


class IndexDropped(BaseModel):
    index: str
    dropped: Literal[True]
    rows_removed: int


class RerankedDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="the document's position in the request")
    relevance_score: float
    document: RerankedDocument | None = Field(default=None, description="with return_documents")


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult] = Field(description="best first")
    usage: Usage


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "a request that cannot work as sent (the message says what to change)"),
        (401, "no or a wrong API key"),
        (403, "a foreign Host or Origin, or a read-only server"),
        (404, "no such index, model, document or route"),
        (409, "another writer holds the index"),
        (413, "the body is over the size bound"),
        (415, "a body that is not application/json"),
        (422, "a body that does not validate"),
        (429, "too much work queued: retry after Retry-After seconds"),
        (503, "not ready yet, too many connections, or a model over the memory budget"),
        (507, "the data directory cannot be written (a full disk, a read-only file system)"),
    )
}
