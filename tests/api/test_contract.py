"""The OpenAPI schema documents every response, and every answer conforms to it (in process: FastAPI's
TestClient, a real LanceDB store, the hand-computable fake model and reranker). Each route is called the way a
client would, and its JSON is checked against the schema /openapi.json publishes for that status, errors
included, with a JSON Schema validator that knows nothing of nvrag's models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from nvrag.api import build_api
from nvrag.embedder.fake import FAKE_NAME
from nvrag.indexer import Indexer
from nvrag.schema import Document
from nvrag.store import LanceStore
from tests.api.test_routes import BASE, Gate, context
from tests.reranker.fakes import SharedWords

CALLS: list[tuple[str, str, dict[str, Any] | list[Any] | None, int]] = [
    ("GET", "/health", None, 200),
    ("GET", "/ready", None, 200),
    ("GET", "/live", None, 200),
    ("GET", "/v1/models", None, 200),
    ("POST", "/v1/embeddings", {"model": FAKE_NAME, "input": ["a bb ccc", "dddd"]}, 200),
    ("POST", "/v1/embeddings", {"model": FAKE_NAME, "input": "a bb", "encoding_format": "base64"}, 200),
    ("POST", "/v1/embeddings", {"model": FAKE_NAME, "input": []}, 400),
    ("POST", "/v1/embeddings", {"model": "nope", "input": "x"}, 404),
    ("POST", "/v1/embeddings", {"model": FAKE_NAME}, 422),
    ("POST", "/v1/search", {"index": "docs", "query": "alpha beta", "k": 2}, 200),
    ("POST", "/v1/search", {"index": "docs", "query": "alpha", "k": 2, "mode": "hybrid", "rerank": True}, 200),
    ("POST", "/v1/search", {"index": "nope", "query": "alpha"}, 404),
    ("POST", "/v1/rerank", {"query": "alpha beta", "documents": ["alpha", "gamma"], "return_documents": True}, 200),
    ("POST", "/v1/rerank", {"query": "alpha", "documents": ["alpha", {"text": "beta"}], "top_n": 1}, 200),
    ("GET", "/v1/indexes", None, 200),
    ("GET", "/v1/indexes/docs", None, 200),
    ("GET", "/v1/indexes/docs/documents", None, 200),
    ("POST", "/v1/indexes/docs/documents", [{"id": "mine", "text": "epsilon zeta", "title": "t"}], 200),
    ("POST", "/v1/indexes/docs/documents", [{"id": "d1", "text": "planted"}], 200),  # reported as failed
    ("DELETE", "/v1/indexes/docs/documents/mine", None, 200),
    ("DELETE", "/v1/indexes/docs/documents/mine", None, 404),
    ("DELETE", "/v1/indexes/docs", None, 400),  # it holds a program's document
    ("POST", "/v1/indexes/extra/documents", [{"id": "x", "text": "eta"}], 200),
    ("DELETE", "/v1/indexes/extra", None, 200),
]


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    store = LanceStore(str(tmp_path / "db"))
    Indexer(store, Gate()).index("docs", [Document("d1", "alpha beta gamma", "memory:d1", "a title")])
    ctx = context(store, Gate(), rerankers={"shared-words": SharedWords()})
    ctx.warm()
    return TestClient(build_api(ctx), base_url=BASE)


def template_of(routes: set[tuple[str, str]], method: str, path: str) -> tuple[str, str]:
    return next((m, t) for m, t in routes if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path))


def response_schema(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    """The schema /openapi.json gives for this route's answer of this status, resolvable on its own."""
    for template, operations in spec["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method.lower() in operations:
            documented = operations[method.lower()]["responses"]
            assert str(status) in documented, f"{method} {path}: {status} is not documented"
            schema = documented[str(status)]["content"]["application/json"]["schema"]
            return {**schema, "components": spec["components"]}
    raise AssertionError(f"{method} {path} is not in the schema")


def test_every_route_documents_its_answers_and_each_answer_conforms(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    called = set()
    for method, path, body, status in CALLS:
        answer = client.request(method, path, json=body)
        assert answer.status_code == status, (method, path, answer.text[:300])
        schema = response_schema(spec, method, path, status)
        jsonschema.validate(answer.json(), schema, cls=jsonschema.Draft202012Validator)
        called.add(template_of(routes, method, path))
    assert routes - called == {("GET", "/metrics")}  # Prometheus text, documented as such
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=1.0.0; charset=utf-8"]


def test_the_schema_would_catch_a_wrong_answer(client: TestClient) -> None:
    """The check above can fail: an answer with a field of the wrong type, or one missing, does not validate."""
    spec = client.get("/openapi.json").json()
    good = client.post("/v1/search", json={"index": "docs", "query": "alpha", "k": 1}).json()
    schema = response_schema(spec, "POST", "/v1/search", 200)
    jsonschema.validate(good, schema, cls=jsonschema.Draft202012Validator)
    wrong = {**good, "hits": [{**good["hits"][0], "score": "high"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"hits": []}, schema, cls=jsonschema.Draft202012Validator)


def test_answers_keep_their_documented_shape(client: TestClient) -> None:
    """What the response models decide: an embedder's card has no reranker fields and a reranker's no dimension;
    a rerank result carries its document only when asked; a search says which reranker it used, or null."""
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert cards[FAKE_NAME]["kind"] == "embedding" and "reranker" not in cards[FAKE_NAME]
    assert cards["shared-words"]["kind"] == "reranker" and "dimension" not in cards["shared-words"]
    plain = client.post("/v1/rerank", json={"query": "alpha", "documents": ["alpha", "beta"]}).json()
    assert [set(r) for r in plain["results"]] == [{"index", "relevance_score"}] * 2
    searched = client.post("/v1/search", json={"index": "docs", "query": "alpha", "k": 1}).json()
    assert searched["reranker"] is None and searched["hits"][0]["title"] == "a title"
    assert searched["hits"][0]["dense_rank"] == 1 and searched["hits"][0]["rerank_score"] is None
