"""POST /v1/rerank in process (a real store, the shared cross-encoder fixture behind the server's
RerankScheduler): Cohere's and Jina's shape, the bounds, the key, /v1/models, reranked searches; the scores
equal what `nvrag rerank` prints for the same input (the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from nvrag.api import APIContext, build_api
from nvrag.api.guard import allowed_hosts
from nvrag.embedder import WordLengthEmbedder
from nvrag.embedder.base import FloatArray
from nvrag.embedder.fake import FAKE_NAME
from nvrag.embedder.scheduler import Scheduler
from nvrag.indexer import Indexer
from nvrag.reranker import PairInput, Reranker, load_reranker
from nvrag.reranker.scheduler import RerankScheduler
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore
from tests.conftest import REPO
from tests.reranker.fakes import SharedWords

BASE = "http://127.0.0.1:8000"
KEY = "test-key-0123456789abcdef"
BERT = REPO.parent / "shared" / "fixtures" / "family" / "bert-cross-encoder"
NAME = "local:cross-encoder/bert-cross-encoder"
QUERY = "What is the capital of China?"
DOCS = ["The capital of China is Beijing.", "Gravity is a force.", "", "Beijing " * 300]
AUTH = {"Authorization": f"Bearer {KEY}"}


def api(store: LanceStore, reranker: Reranker | None, **options: object) -> APIContext:
    scheduler = Scheduler(WordLengthEmbedder())
    ctx = APIContext(
        store=store,
        models=[FAKE_NAME],
        embedder_for=lambda name: scheduler,
        retriever_for=lambda name: Retriever(store.open(name), scheduler),
        allowed_hosts=allowed_hosts("127.0.0.1", ()),
        api_key=KEY,
        rerankers={reranker.name: reranker} if reranker is not None else {},
        **options,  # type: ignore[arg-type]
    )
    if isinstance(reranker, RerankScheduler):
        ctx.metrics.watch(reranker)
    return ctx


@pytest.fixture(scope="module")
def bert() -> RerankScheduler:
    return RerankScheduler(load_reranker(BERT, dtype="float32"))


@pytest.fixture
def client(tmp_path: Path, bert: RerankScheduler) -> Iterator[TestClient]:
    store = LanceStore(str(tmp_path / "db"))
    Indexer(store, WordLengthEmbedder()).index(
        "docs", [Document(f"d{i}", t or "empty", f"memory:d{i}") for i, t in enumerate(DOCS)]
    )
    with TestClient(build_api(api(store, bert, max_rerank_documents=8)), base_url=BASE, headers=AUTH) as client:
        yield client


def test_the_cohere_shape_best_first_with_the_model_s_scores(client: TestClient, bert: RerankScheduler) -> None:
    body = {"model": NAME, "query": QUERY, "documents": DOCS}
    got = client.post("/v1/rerank", json=body)
    assert got.status_code == 200, got.text
    data = got.json()
    expected = bert.inner.score(QUERY, DOCS)
    assert data["model"] == NAME and data["id"].startswith("rerank-")
    assert [r["index"] for r in data["results"]] == np.argsort(-expected, kind="stable").tolist()
    for result in data["results"]:
        assert result["relevance_score"] == pytest.approx(float(expected[result["index"]]), abs=1e-6)
        assert "document" not in result
    tokens = sum(len(p.ids) for p in bert.encode(QUERY, DOCS, None))
    assert data["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_jina_s_objects_top_n_return_documents_and_the_other_paths(client: TestClient) -> None:
    body = {"query": QUERY, "documents": [{"text": d, "id": i} for i, d in enumerate(DOCS)], "top_n": 2,
            "return_documents": True}  # fmt: skip
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        got = client.post(path, json=body)  # the model left out: the one served
        assert got.status_code == 200, (path, got.text)
        results = got.json()["results"]
        assert len(results) == 2 and all(r["document"]["text"] == DOCS[r["index"]] for r in results)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "other", "query": "q", "documents": ["d"]}, 404, "model_not_found"),
        ({"query": "q", "documents": []}, 400, "empty_input"),
        ({"query": "q", "documents": ["d"] * 9}, 400, "too_many"),
        ({"query": "q", "documents": ["x" * 100_001]}, 400, "input_too_long"),
        ({"query": "q" * 10_001, "documents": ["d"]}, 422, "invalid_body"),
        ({"query": "q", "documents": ["d"], "top_n": 0}, 422, "invalid_body"),
        ({"query": "q", "documents": [{"title": "no text"}]}, 422, "invalid_body"),
    ],
)
def test_bounds_and_mistakes_are_one_error(client: TestClient, body: dict[str, object], status: int, code: str) -> None:
    got = client.post("/v1/rerank", json=body)
    assert got.status_code == status and got.json()["error"]["code"] == code, got.text


def test_the_key_guards_it_and_models_lists_it(client: TestClient) -> None:
    anonymous = client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert cards[NAME]["kind"] == "reranker" and cards[NAME]["reranker"] == "cross-encoder"
    assert cards[FAKE_NAME]["kind"] == "embedding"


def test_a_reranked_search_over_http(client: TestClient, bert: RerankScheduler) -> None:
    first = client.post("/v1/search", json={"index": "docs", "query": QUERY, "k": 4}).json()["hits"]
    got = client.post("/v1/search", json={"index": "docs", "query": QUERY, "k": 2, "rerank": True, "rerank_depth": 4})
    assert got.status_code == 200, got.text
    data = got.json()
    scores = bert.inner.score(QUERY, [h["text"] for h in first])
    best = np.argsort(-scores, kind="stable")[:2]
    assert data["reranker"] == NAME
    assert [h["chunk_id"] for h in data["hits"]] == [first[i]["chunk_id"] for i in best]
    assert [h["retrieval_rank"] for h in data["hits"]] == [int(i) + 1 for i in best]
    named = client.post("/v1/search", json={"index": "docs", "query": QUERY, "k": 2, "rerank": NAME})
    assert named.status_code == 200


def test_without_a_reranker_rerank_is_a_clear_400(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    with TestClient(build_api(api(store, None)), base_url=BASE, headers=AUTH) as client:
        for path, body in (("/v1/rerank", {"query": "q", "documents": ["d"]}),
                           ("/v1/search", {"index": "x", "query": "q", "rerank": True})):  # fmt: skip
            got = client.post(path, json=body)
            if path == "/v1/search":
                assert got.status_code == 404  # the index is checked first
                continue
            assert got.status_code == 400 and got.json()["error"]["code"] == "no_reranker"
            assert "--rerank-model" in got.json()["error"]["message"]


class Gated(SharedWords):
    """The by-hand reranker, its forward passes held while the gate is closed; ``passes``: the rows of each."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()
        self.passes: list[int] = []

    def forward(self, batch: Sequence[PairInput]) -> FloatArray:
        self.entered.set()
        assert self.gate.wait(timeout=60)
        self.passes.append(len(batch))
        return super().forward(batch)


def test_requests_waiting_together_share_forward_passes_and_a_full_queue_is_429(tmp_path: Path) -> None:
    inner = Gated()
    scheduler = RerankScheduler(inner, max_queued=2)
    store = LanceStore(str(tmp_path / "db"))
    with TestClient(build_api(api(store, scheduler)), base_url=BASE, headers=AUTH) as client:
        with ThreadPoolExecutor(4) as pool:
            held = pool.submit(client.post, "/v1/rerank", json={"query": "a", "documents": ["a b"]})
            assert inner.entered.wait(timeout=60)
            waiting = [
                pool.submit(client.post, "/v1/rerank", json={"query": "a", "documents": ["a c", "a d"]}),
                pool.submit(client.post, "/v1/rerank", json={"query": "z", "documents": ["a e", "a f"]}),
            ]
            deadline = threading.Event()
            for _ in range(6000):
                if scheduler.queued == 2:
                    break
                deadline.wait(0.01)
            refused = client.post("/v1/rerank", json={"query": "a", "documents": ["x"]})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            inner.gate.set()
            assert held.result().status_code == 200
            results = [w.result().json()["results"] for w in waiting]
        # the two waiting requests (2 + 2 pairs of one length) ran in one forward pass
        assert inner.passes == [1, 4]
        assert [r["relevance_score"] for r in results[0]] == [1.0, 1.0]  # "a" shared with the query
        assert [r["relevance_score"] for r in results[1]] == [0.0, 0.0]


@pytest.mark.slow
def test_a_real_server_s_scores_equal_the_cli_s(tmp_path: Path) -> None:
    """`nvrag serve --rerank-model DIR` and `nvrag rerank --model-path DIR`: the same body, the same scores."""
    import httpx

    from tests.api.test_server import serve

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "nvrag", "rerank", QUERY, "--model-path", str(BERT), "--input", str(source),
         "--dtype", "float32", "--json"],
        capture_output=True, text=True, timeout=600, check=False, env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    server = serve(tmp_path / "db", "--model", FAKE_NAME, "--rerank-model", str(BERT), "--dtype", "float32")
    url = next(server)
    try:
        http = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=60).json()
        models = httpx.get(f"{url}/v1/models", timeout=60).json()["data"]
    finally:
        server.close()
    assert cli["model"] == http["model"] == NAME
    assert any(m["id"] == NAME and m["kind"] == "reranker" for m in models)
    assert [r["index"] for r in cli["results"]] == [r["index"] for r in http["results"]]
    for a, b in zip(cli["results"], http["results"], strict=True):
        assert a["relevance_score"] == pytest.approx(b["relevance_score"], abs=1e-6)
