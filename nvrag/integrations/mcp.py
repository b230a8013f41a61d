"""nvrag for agents: a Model Context Protocol server (the `mcp` package, 2.x) with three tools.

- ``search``: the hits of an index for a query (dense, bm25 or hybrid; a metadata filter; a task or an
  instruction; reranked by the served reranker with ``rerank``), each with its text, source, score and ids.
- ``list_indexes``: the indexes served, with model, dimension and rows.
- ``get_document``: one document's chunks, in order, by its id.

``nvrag mcp`` runs it over stdio; ``nvrag serve`` mounts the same server at ``/mcp`` (streamable HTTP, behind
the API key). MCP types stay in this module; the tools speak nvrag's own (Retriever, Store).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from nvrag import __version__
from nvrag.embedder import resolve_instruction
from nvrag.errors import ConfigError, IndexNotFoundError, NvRagError
from nvrag.limits import MAX_K_SHOWN, MAX_QUERY_CHARS
from nvrag.reranker import Reranker
from nvrag.retriever import DEFAULT_RERANK_DEPTH, MODES, Retriever, parse_filters
from nvrag.store import Store
from nvrag.store.visibility import check_visible, visible_indexes

MAX_K = MAX_K_SHOWN  # results an agent reads in full


@dataclass
class MCPContext:
    """What the tools read: the store, a retriever per index, which indexes are served (None: all), and the
    reranker a search may use (None: searches cannot rerank)."""

    store: Store
    retriever_for: Callable[[str], Retriever]
    indexes: Sequence[str] | None = None
    reranker: Reranker | None = None

    def served(self) -> list[str]:
        return visible_indexes(self.store, self.indexes)

    def check(self, index: str) -> None:
        check_visible(self.store, self.indexes, index)


def _told(tool: Callable[..., Any]) -> Callable[..., Any]:
    """A domain error becomes the tool's error message (the agent reads it), never a crash report."""

    @functools.wraps(tool)
    def told(*args: Any, **kwargs: Any) -> Any:
        try:
            return tool(*args, **kwargs)
        except NvRagError as exc:
            raise ToolError(exc.for_api()) from None  # the hint in the tool's terms, not the CLI's

    return told


def build_mcp(ctx: MCPContext) -> MCPServer:
    server = MCPServer(
        "nvrag",
        version=__version__,
        log_level="WARNING",
        instructions="Search the user's document indexes. Call list_indexes first, then search; get_document "
        "reads a whole document whose chunk a search returned.",
    )

    @server.tool()
    @_told
    def search(
        index: str,
        query: str,
        k: int = 5,
        mode: str = "dense",
        filter: str | None = None,
        task: str | None = None,
        instruction: str | None = None,
        rerank: bool = False,
    ) -> list[dict[str, Any]]:
        """Search an index. mode: dense (meaning), bm25 (words) or hybrid (both). filter: metadata conditions
        such as "lang = en and year >= 2020". task: a query instruction preset (e.g. SciFact) or instruction:
        free text. rerank: reorder the best 50 candidates with the server's reranker (more precise, slower).
        Returns the hits, best first, with text, source, score, doc_id and chunk_id (and rerank_score)."""
        ctx.check(index)
        if not query.strip() or len(query) > MAX_QUERY_CHARS:
            raise ConfigError(f"the query must be 1 to {MAX_QUERY_CHARS} characters")
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K}")
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; use dense, bm25 or hybrid")
        if rerank and ctx.reranker is None:
            raise ConfigError("this server has no reranker (start it with --rerank-model); search without rerank")
        hits = ctx.retriever_for(index).search(
            query,
            k,
            instruction=resolve_instruction(task, instruction),
            mode=mode,  # checked against MODES above
            filters=parse_filters([filter] if filter else []),
            reranker=ctx.reranker if rerank else None,
            rerank_depth=max(DEFAULT_RERANK_DEPTH, k),
        )
        keep: tuple[str, ...] = ("rank", "score", "doc_id", "chunk_id", "title", "text", "source", "page", "metadata")
        keep += ("retrieval_rank", "rerank_score") if rerank else ()
        return [{key: h.to_dict()[key] for key in keep} for h in hits]

    @server.tool()
    @_told
    def list_indexes() -> list[dict[str, Any]]:
        """The indexes this server searches: name, model, dimension and rows (chunks)."""
        rows = []
        for name in ctx.served():
            table = ctx.store.open(name)
            m = table.manifest
            rows.append({"name": name, "model": m.model, "dimension": m.dimension, "rows": table.count()})
        return rows

    @server.tool()
    @_told
    def get_document(index: str, id: str) -> dict[str, Any]:
        """One document of an index by its doc_id: its chunks in order (text, span, title, source)."""
        ctx.check(index)
        table = ctx.store.open(index)
        ids = sorted(table.chunk_ids_by_doc().get(id, ()))
        if not ids:
            raise IndexNotFoundError(f"index {index!r} has no document {id!r}")
        chunks = sorted(table.get(ids), key=lambda c: c.chunk_no)
        return {
            "index": index,
            "id": id,
            "source": chunks[0].source,
            "title": chunks[0].title,
            "chunks": [{"chunk_no": c.chunk_no, "text": c.text, "start": c.start, "end": c.end} for c in chunks],
        }

    return server
