"""The bounds of a search request, defined once (stdlib only, so the CLI's options read them without importing
anything heavy): the retriever enforces them, and the CLI, the HTTP API, MCP and the page take them from here."""

from __future__ import annotations

MAX_QUERY_CHARS = 10_000  # a query, an instruction or a rerank instruction, in characters
MAX_K = 1000  # results one search returns
MAX_K_SHOWN = 50  # results where each is read in full: the page's cards, an agent's context (MCP)
MAX_RERANK_DEPTH = 1000  # first-stage candidates one search reranks
