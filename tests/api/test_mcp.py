"""The MCP server, driven by the mcp package's own client: over stdio (`nvrag mcp`) and over streamable HTTP
(`nvrag serve`'s /mcp, behind its API key). Its hits are `nvrag search --json`'s."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.api.test_server import KEY, serve
from tests.conftest import DEMO_CORPUS
from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow
QUERY = "compute a digest of a file"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("mcp") / "db"
    for name in ("demo", "other"):
        built = nvrag("index", str(DEMO_CORPUS), "--index", name, "--model", "nvrag/fake-wordlen", db=db)
        assert built.returncode == 0, built.stderr
    return db


@pytest.fixture(scope="module")
def keyed(db: Path) -> Iterator[str]:
    yield from serve(db, "--api-key", KEY, "--index", "demo")


@pytest.fixture(scope="module")
def open_url(db: Path) -> Iterator[str]:
    yield from serve(db)


def texts(result: Any) -> list[Any]:
    assert not result.is_error, result
    return [json.loads(c.text) for c in result.content]


async def session(server: Any) -> dict[str, Any]:
    """What an agent sees: the tools, a search, the index list, a document, and a refused call."""
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        hits = texts(await client.call_tool("search", {"index": "demo", "query": QUERY, "k": 3}))
        indexes = texts(await client.call_tool("list_indexes", {}))
        document = texts(await client.call_tool("get_document", {"index": "demo", "id": hits[0]["doc_id"]}))
        refused = await client.call_tool("search", {"index": "nope", "query": "x"})
        return {"tools": tools, "hits": hits, "indexes": indexes, "document": document, "refused": refused}


def expected_hits(db: Path) -> list[dict[str, Any]]:
    found = nvrag("search", QUERY, "--index", "demo", "-k", "3", "--json", db=db)
    assert found.returncode == 0, found.stderr
    keep = ("rank", "score", "doc_id", "chunk_id", "title", "text", "source", "page", "metadata")
    return [{k: h[k] for k in keep} for h in json.loads(found.stdout)]


def check(seen: dict[str, Any], db: Path, served: list[str]) -> None:
    assert set(seen["tools"]) == {"search", "list_indexes", "get_document"}
    assert "filter" in seen["tools"]["search"].input_schema["properties"]
    assert seen["hits"] == expected_hits(db)
    assert [i["name"] for i in seen["indexes"]] == served
    (document,) = seen["document"]
    assert document["id"] == seen["hits"][0]["doc_id"] and document["chunks"][0]["chunk_no"] == 0
    assert any(seen["hits"][0]["text"] == c["text"] for c in document["chunks"])
    assert seen["refused"].is_error
    assert "no index named 'nope' here" in seen["refused"].content[0].text


def test_over_stdio(db: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db))
    params = StdioServerParameters(command=sys.executable, args=["-m", "nvrag", "mcp", "--index", "demo"], env=env)
    check(asyncio.run(session(params)), db, ["demo"])


def test_over_http_on_nvrag_serve(db: Path, open_url: str) -> None:
    check(asyncio.run(session(f"{open_url}/mcp/")), db, ["demo", "other"])


def test_the_http_endpoint_is_behind_the_api_key(keyed: str) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}):
        answer = httpx.post(f"{keyed}/mcp/", json=hello, headers=headers)
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"


def test_a_server_that_cannot_start_tells_the_agent_why(tmp_path: Path) -> None:
    """An agent gets nvrag's line as the JSON-RPC error answering its initialize request (not just a closed
    connection), and the line goes to stderr too; the exit code is the CLI's."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(tmp_path / "db"))
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    done = subprocess.run(
        [sys.executable, "-m", "nvrag", "mcp", "--index", "nope"],
        input=json.dumps(initialize) + "\n", capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    answer = json.loads(done.stdout)
    assert answer["id"] == 1 and answer["error"]["code"] == -32603
    assert answer["error"]["message"].startswith("nvrag mcp cannot start: no index named 'nope'")
    assert done.stderr.startswith("error: no index named 'nope'")
