"""MCP's search tool with ``rerank``, in process (the mcp package's own client over its in-memory transport):
the by-hand reranker's order with both ranks, and a clear tool error where no reranker is served."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from mcp import Client

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer
from nvrag.integrations.mcp import MCPContext, build_mcp
from nvrag.reranker import Reranker
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore
from tests.reranker.fakes import SharedWords


def call(store: LanceStore, reranker: Reranker | None, arguments: dict[str, Any]) -> Any:
    fake = WordLengthEmbedder()
    server = build_mcp(MCPContext(store, lambda name: Retriever(store.open(name), fake), None, reranker))

    async def run() -> Any:
        async with Client(server) as client:
            return await client.call_tool("search", arguments)

    return asyncio.run(run())


def test_search_reranks_when_asked(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    docs = [Document("A", "apple banana pie", "a"), Document("B", "cherry tart", "b")]
    Indexer(store, WordLengthEmbedder()).index("t", docs)
    plain = call(store, SharedWords(), {"index": "t", "query": "cherry xxxxx", "k": 2, "instruction": "q"})
    assert [json.loads(c.text)["doc_id"] for c in plain.content] == ["A", "B"]
    assert "rerank_score" not in json.loads(plain.content[0].text)
    ranked = call(
        store, SharedWords(), {"index": "t", "query": "cherry xxxxx", "k": 2, "instruction": "q", "rerank": True}
    )
    hits = [json.loads(c.text) for c in ranked.content]
    assert [(h["doc_id"], h["rerank_score"], h["retrieval_rank"]) for h in hits] == [("B", 1.0, 2), ("A", 0.0, 1)]
    refused = call(store, None, {"index": "t", "query": "x", "rerank": True})
    assert refused.is_error and "no reranker" in refused.content[0].text
