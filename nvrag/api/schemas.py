"""Request and response bodies of the HTTP API (pydantic): OpenAI's embeddings shape plus retrieval extensions.

Strings and lists are bounded here, so a request cannot cost more than its limits before any work starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nvrag.indexer.reading import MAX_DOCUMENT_CHARS, MAX_TITLE_CHARS
from nvrag.limits import MAX_K, MAX_QUERY_CHARS, MAX_RERANK_DEPTH

MAX_INPUT_CHARS = 100_000  # one input text; inputs over the model's token limit are truncated by it
MAX_NAME_CHARS = 200


class EmbeddingsRequest(BaseModel):
    """POST /v1/embeddings: OpenAI's body; ``input_type``, ``task`` and ``instruction`` are nvrag's extensions
    (send them with the openai client's ``extra_body``)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=MAX_NAME_CHARS)
    input: str | list[str] = Field(description="a text or a list of texts")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    input_type: Literal["document", "query"] = "document"
    task: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    instruction: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)
    truncate: bool = Field(default=True, description="cut inputs over the model's limit (false: refuse them)")


class SearchRequest(BaseModel):
    """POST /v1/search: the options of ``nvrag search``."""

    model_config = ConfigDict(extra="forbid")

    index: str = Field(max_length=MAX_NAME_CHARS)
    query: str = Field(max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: Literal["dense", "bm25", "hybrid"] = "dense"
    filter: str | list[str] | None = None
    task: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    instruction: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)
    min_score: float | None = None
    mmr: float | None = Field(default=None, ge=0.0, le=1.0)
    rerank: bool | str = Field(
        default=False, description="true: rerank with the served reranker; or the name of a served reranker"
    )
    rerank_depth: int = Field(default=50, ge=1, le=MAX_RERANK_DEPTH)
    rerank_instruction: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)


class RerankDocument(BaseModel):
    """A document to rerank given as an object: its ``text`` (other fields are the client's, ignored)."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(max_length=MAX_INPUT_CHARS)


class RerankRequest(BaseModel):
    """POST /v1/rerank (also /rerank and /v2/rerank): Cohere's and Jina's body; ``instruction`` is nvrag's
    extension (what relevance means to an LLM reranker). ``model`` may be left out when one reranker is served."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    query: str = Field(max_length=MAX_QUERY_CHARS)
    documents: list[str | RerankDocument]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    instruction: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)


class DocumentIn(BaseModel):
    """One document of POST /v1/indexes/{name}/documents."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=1000)
    text: str = Field(max_length=MAX_DOCUMENT_CHARS)
    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)
