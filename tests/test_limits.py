"""A search's bounds are defined once (nvrag/limits.py) and every surface applies the same ones: the retriever,
the CLI's options, the HTTP API's schema, MCP's tool and the page."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from nvrag.api.schemas import SearchRequest
from nvrag.app.cli import app
from nvrag.errors import ConfigError
from nvrag.integrations import mcp
from nvrag.limits import MAX_K, MAX_K_SHOWN, MAX_QUERY_CHARS, MAX_RERANK_DEPTH
from nvrag.ui import callbacks


def option(command: str, name: str) -> Any:
    """A command's option as the CLI parses it (Typer's own click)."""
    found = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return next(p for p in found.params if p.name == name)


def test_every_surface_takes_the_search_bounds_from_one_place() -> None:
    schema = SearchRequest.model_json_schema()["properties"]
    assert schema["k"]["maximum"] == MAX_K and schema["query"]["maxLength"] == MAX_QUERY_CHARS
    assert schema["rerank_depth"]["maximum"] == MAX_RERANK_DEPTH
    k, depth = option("search", "k"), option("search", "rerank_depth")
    assert (k.min, k.max) == (1, MAX_K)
    assert (depth.min, depth.max) == (1, MAX_RERANK_DEPTH)
    assert option("eval", "rerank_depth").max == MAX_RERANK_DEPTH
    assert mcp.MAX_K == MAX_K_SHOWN == callbacks.MAX_K  # where every result is read in full


def test_the_retriever_enforces_them(retriever_for_limits: object) -> None:
    from nvrag.retriever import Retriever

    assert isinstance(retriever_for_limits, Retriever)
    with pytest.raises(ConfigError, match=f"k must be between 1 and {MAX_K}"):
        retriever_for_limits.search("x", MAX_K + 1)
    with pytest.raises(ConfigError, match=f"the limit is {MAX_QUERY_CHARS}"):
        retriever_for_limits.search("x" * (MAX_QUERY_CHARS + 1))


@pytest.fixture
def retriever_for_limits(tmp_path: object) -> object:
    from pathlib import Path

    from nvrag.embedder import WordLengthEmbedder
    from nvrag.indexer import Indexer
    from nvrag.retriever import Retriever
    from nvrag.schema import Document
    from nvrag.store import LanceStore

    assert isinstance(tmp_path, Path)
    store = LanceStore(str(tmp_path / "db"))
    Indexer(store, WordLengthEmbedder()).index("t", [Document("d", "a bb", "memory:d")])
    return Retriever(store.open("t"), WordLengthEmbedder())
