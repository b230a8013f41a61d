"""/v1/rerank and `nvrag rerank` under hostile input: bodies a page of another origin can send, JSON nested
past the limit, counts and sizes past the bounds, a query that leaves no room, markup and control characters in
documents; each refused in one line (or shown inert), the server answering the next request."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from nvrag.api import build_api
from nvrag.reranker.scheduler import RerankScheduler
from nvrag.store import LanceStore
from tests.api.test_rerank_api import AUTH, BASE, api
from tests.e2e.test_family_cli import FAMILY, nvrag
from tests.reranker.fakes import SharedWords


def test_the_rerank_route_refuses_what_it_must(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    ctx = api(store, RerankScheduler(SharedWords()), max_rerank_documents=100)
    with TestClient(build_api(ctx), base_url=BASE, headers=AUTH) as client:
        body = json.dumps({"query": "a", "documents": ["a"]})
        form = client.post("/v1/rerank", content=body, headers={"Content-Type": "text/plain"})
        assert form.status_code == 415  # a cross-site form cannot send it
        foreign = client.post(
            "/v1/rerank", json={"query": "a", "documents": ["a"]}, headers={"Origin": "http://x.example"}
        )
        assert foreign.status_code == 403
        nested = client.post("/v1/rerank", content=b'{"query": "a", "documents": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert nested.status_code in (400, 422) and "Traceback" not in nested.text
        many = client.post("/v1/rerank", json={"query": "a", "documents": ["a"] * 101})
        assert many.status_code == 400 and many.json()["error"]["code"] == "too_many"
        odd = client.post("/v1/rerank", json={"query": "a", "documents": [None, 3, {"text": ["x"]}]})
        assert odd.status_code == 422
        ok = client.post("/v1/rerank", json={"query": "a b", "documents": ["<script>a</script>", "a \x1b[31m"]})
        assert ok.status_code == 200 and [r["index"] for r in ok.json()["results"]] == [1, 0]


def test_the_cli_shows_documents_inert_and_refuses_a_query_with_no_room(tmp_path: Path) -> None:
    qwen = FAMILY / "qwen3-reranker"
    long_query = nvrag("rerank", "word " * 200, "a document", "--model-path", str(qwen), "--max-length", "100",
                       db=tmp_path)  # fmt: skip
    assert long_query.returncode == 2 and "no room for a document" in long_query.stderr
    assert len(long_query.stderr.strip().splitlines()) == 2  # the reranker line, then the one error line
    shown = nvrag("rerank", "q", "\x1b[2Jcleared [red]red[/red]", "--model-path", str(FAMILY / "bert-cross-encoder"),
                  db=tmp_path)  # fmt: skip
    assert shown.returncode == 0 and "\x1b[2J" not in shown.stdout and "[red]red[/red]" in shown.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"text": 3}\n', encoding="utf-8")
    refused = nvrag("rerank", "q", "--input", str(bad), "--model-path", str(FAMILY / "bert-cross-encoder"), db=tmp_path)
    assert refused.returncode == 2 and "line 2" in refused.stderr and "Traceback" not in refused.stderr
