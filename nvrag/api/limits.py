"""The server's bounds, defined once (stdlib only, so the CLI's --help and option defaults read them without
importing the web stack). docs/api.md lists each with its meaning."""

from __future__ import annotations

MAX_BODY_BYTES = 16 * 1024 * 1024  # one request body (413 over)
DEFAULT_DOCUMENTS_LISTED = 1000  # documents per page of GET /v1/indexes/NAME/documents
MAX_DOCUMENTS_LISTED = 10_000  # the largest page a client may ask for (limit=)
DEFAULT_MAX_RERANK_DOCUMENTS = 1000  # documents per rerank request (Cohere's own limit)
DEFAULT_MAX_INPUTS = 2048  # texts per embeddings request, documents per documents request (OpenAI's own limit)
DEFAULT_MAX_IN_FLIGHT = 32  # requests doing work at once (the rest: 429)
DEFAULT_MAX_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024  # request bodies being received or held at once (429 over)
BODY_IDLE_SECONDS = 10.0  # the longest pause between two parts of a body (408)
BODY_TOTAL_SECONDS = 60.0  # the longest a whole body may take to arrive (408)
HEADER_SECONDS = 10.0  # the request line and headers, from the first byte or the connection opening
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection
DEFAULT_MAX_CONNECTIONS = 1024  # open connections (503 over)
