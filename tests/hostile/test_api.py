"""`nvrag serve` as an attacker meets it: paths named by the client, bodies that are huge, unannounced,
compressed or nested, markup in texts, and a second writer. Each is refused in one OpenAI-shaped line (or
stored as inert data), the server goes on answering and nothing already indexed is lost."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nvrag.store import LanceStore

pytestmark = pytest.mark.slow
FAKE = "nvrag/fake-wordlen"
JSON = {"content-type": "application/json"}


def rows(db: Path) -> int:
    return LanceStore(str(db)).open("demo").count()


def error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]["message"]
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message
    return str(message)


def test_no_route_takes_a_path_the_client_names(url: str, db: Path) -> None:
    before = rows(db)
    for name in ("..%2F..%2Fetc", "%2Fetc%2Fpasswd", ".hidden", "a" * 65):
        answer = httpx.post(f"{url}/v1/indexes/{name}/documents", json=[{"id": "x", "text": "t"}])
        assert answer.status_code in (400, 404), answer.text
        assert "invalid index name" in error(answer, answer.status_code) or answer.status_code == 404
    for name in ("../demo", "%2E%2E"):
        assert httpx.get(f"{url}/v1/indexes/{name}").status_code == 404
    assert "no route" in error(httpx.delete(f"{url}/v1/indexes/demo/documents/..%2F..%2Fetc%2Fpasswd"), 404)
    assert "has no document '<script>'" in error(httpx.delete(f"{url}/v1/indexes/demo/documents/%3Cscript%3E"), 404)
    assert not list(db.parent.glob("etc*")) and rows(db) == before


def test_bodies_huge_unannounced_compressed_or_nested_are_refused(url: str, db: Path) -> None:
    before = rows(db)
    huge = httpx.post(f"{url}/v1/embeddings", content=b"[" + b"0," * (9 * 1024 * 1024) + b"0]", headers=JSON)
    assert "over" in error(huge, 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the size is not known before reading
        yield json.dumps({"model": FAKE, "input": "x"}).encode()

    assert error(httpx.post(f"{url}/v1/embeddings", content=chunked(), headers=JSON), 411)
    bomb = gzip.compress(json.dumps([{"id": str(i), "text": "a " * 1000} for i in range(2000)]).encode())
    packed = httpx.post(f"{url}/v1/indexes/demo/documents", content=bomb, headers={**JSON, "content-encoding": "gzip"})
    assert "not a JSON array of documents" in error(packed, 400)  # never inflated
    deep = b'[{"id": "x", "text": "t", "metadata": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}]"
    assert "nested deeper than 64" in error(
        httpx.post(f"{url}/v1/indexes/demo/documents", content=deep, headers=JSON), 400
    )
    deep_search = b'{"index": "demo", "query": "x", "filter": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert httpx.post(f"{url}/v1/search", content=deep_search, headers=JSON).status_code in (400, 422)
    many = [{"id": str(i), "text": "t"} for i in range(2049)]
    assert "the limit is 2048" in error(httpx.post(f"{url}/v1/indexes/demo/documents", json=many), 400)
    assert rows(db) == before
    assert httpx.get(f"{url}/health").status_code == 200  # still answering


def test_markup_in_texts_is_stored_and_returned_as_data(url: str) -> None:
    markup = "<script>window.pwned=1</script><img src=x onerror=alert(1)> [link](javascript:alert(1)) \x1b[31m"
    added = httpx.post(f"{url}/v1/indexes/marked/documents", json=[{"id": "m", "text": markup, "title": markup}])
    assert added.status_code == 200 and added.json()["documents"] == 1
    hits = httpx.post(f"{url}/v1/search", json={"index": "marked", "query": "script img link"}).json()["hits"]
    # JSON data, not escaped or rendered (a chunk spans its first to last token, so the leading "<" is not in it)
    assert hits[0]["title"] == markup and "window.pwned=1</script><img src=x onerror=alert(1)>" in hits[0]["text"]
    answer = httpx.post(f"{url}/v1/search", json={"index": "<b>x</b>", "query": "x"})
    assert answer.headers["content-type"].startswith("application/json") and "invalid index name" not in answer.text
    error(answer, 404)


def test_a_second_writer_is_refused_and_the_first_ones_rows_survive(url: str, db: Path) -> None:
    before = rows(db)
    with LanceStore(str(db)).writing("demo"):
        busy = httpx.post(f"{url}/v1/indexes/demo/documents", json=[{"id": "new", "text": "another writer"}])
        assert "is being written by another process" in error(busy, 409)
    assert rows(db) == before
    after = httpx.post(f"{url}/v1/indexes/demo/documents", json=[{"id": "new", "text": "now it can write"}])
    assert after.status_code == 200 and rows(db) == before + 1
