"""The API in process (FastAPI's TestClient, a real LanceDB store, the hand-computable fake model): the door
(Host, Origin, JSON-only bodies, where Basic auth is taken, CORS only when configured), admission (429 with
Retry-After past the bound, the probes and /metrics never waiting behind model work), readiness after a real
forward pass, and metric labels that clients cannot grow. The subprocess tests beside it drive a real server."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nvrag.api import APIContext, build_api
from nvrag.api.guard import allowed_hosts
from nvrag.embedder import Embedder, WordLengthEmbedder
from nvrag.embedder.base import FloatArray
from nvrag.embedder.fake import FAKE_NAME
from nvrag.embedder.scheduler import Scheduler
from nvrag.indexer import Indexer
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore

BASE = "http://127.0.0.1:8000"
KEY = "test-key-0123456789abcdef"
EMBED = {"model": FAKE_NAME, "input": ["a bb ccc"]}


class Gate(WordLengthEmbedder):
    """The fake model, whose forward passes wait while the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        self.entered.set()
        assert self.gate.wait(timeout=60)
        return super().forward(batch, prefix)


def context(store: LanceStore, model: Gate, **options: object) -> APIContext:
    scheduler = Scheduler(model)

    def embedder_for(name: str) -> Embedder:
        return scheduler

    def retriever_for(name: str) -> Retriever:
        return Retriever(store.open(name), scheduler)

    ctx = APIContext(
        store=store,
        models=[FAKE_NAME],
        embedder_for=embedder_for,
        retriever_for=retriever_for,
        run_index=Indexer(store, scheduler).run,
        allowed_hosts=allowed_hosts("127.0.0.1", ()),
        **options,  # type: ignore[arg-type]
    )
    ctx.metrics.watch(scheduler)
    return ctx


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, APIContext, Gate]]:
    store = LanceStore(str(tmp_path / "db"))
    Indexer(store, WordLengthEmbedder()).index("docs", [Document("d1", "alpha beta gamma", "memory:d1")])
    model = Gate()
    ctx = context(store, model, max_in_flight=2)
    ctx.warm()
    with TestClient(build_api(ctx), base_url=BASE) as client:
        yield client, ctx, model


def test_a_foreign_host_gets_421_and_loopback_names_are_answered(served: tuple[TestClient, APIContext, Gate]) -> None:
    client = served[0]
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
        got = client.get("/v1/indexes", headers={"Host": host})
        assert got.status_code == 421 and got.json()["error"]["code"] == "host_not_allowed", host
        assert "--allowed-host" in got.json()["error"]["message"]
    # the probes too: a rebinding page learns nothing, not even that the server is up
    assert client.get("/health", headers={"Host": "evil.example"}).status_code == 421


def test_allowed_hosts_follow_the_bind_and_the_named_hosts() -> None:
    assert allowed_hosts("127.0.0.1", ()) == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("0.0.0.0", ()) is None  # a wildcard bind answers any name (it needs a key)
    assert allowed_hosts("0.0.0.0", ["search.example:443"]) == {"search.example"}
    assert allowed_hosts("10.1.2.3", ["Search.Example"]) == {"10.1.2.3", "search.example"}
    assert allowed_hosts("127.0.0.1", ["*"]) is None


def test_a_web_page_of_another_origin_cannot_write_or_read(served: tuple[TestClient, APIContext, Gate]) -> None:
    client, ctx, _ = served
    evil = {"Origin": "http://evil.example"}
    planted = [{"id": "planted", "text": "spam"}]
    for method, path, body in (
        ("POST", "/v1/indexes/docs/documents", planted),
        ("DELETE", "/v1/indexes/docs/documents/d1", None),
        ("POST", "/v1/embeddings", EMBED),
        ("POST", "/v1/search", {"index": "docs", "query": "alpha"}),
    ):
        got = client.request(method, path, json=body, headers=evil)
        assert got.status_code == 403 and got.json()["error"]["code"] == "cross_origin", path
    assert ctx.store.open("docs").count() == 1  # nothing planted, nothing deleted
    # "null" (a sandboxed frame or a file: page) is foreign too; the server's own origin is not
    assert client.post("/v1/embeddings", json=EMBED, headers={"Origin": "null"}).status_code == 403
    assert client.post("/v1/embeddings", json=EMBED, headers={"Origin": BASE}).status_code == 200
    # no CORS unless configured: a page of another origin cannot read a GET's answer
    got = client.get("/v1/indexes", headers=evil)
    assert got.status_code == 200 and "access-control-allow-origin" not in got.headers


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None, "application/jsonx"],
)
def test_json_routes_take_only_json_bodies(
    served: tuple[TestClient, APIContext, Gate], content_type: str | None
) -> None:
    client, ctx, _ = served
    # the bodies an HTML form can send cross-site without asking (text/plain carrying valid JSON, say)
    body = b'[{"id": "planted", "text": "spam"}]'
    headers = {"Content-Type": content_type} if content_type else {}
    got = client.post("/v1/indexes/docs/documents", content=body, headers=headers)
    assert got.status_code == 415 and got.json()["error"]["code"] == "unsupported_media_type"
    assert ctx.store.open("docs").count() == 1
    ok = client.post("/v1/embeddings", content=b'{"model": "%s", "input": "x"}' % FAKE_NAME.encode(),
                     headers={"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert ok.status_code == 200


def test_named_origins_get_cors_and_may_write(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    app = build_api(context(store, Gate(), allowed_origins=frozenset({"https://app.example"})))
    with TestClient(app, base_url=BASE) as client:
        preflight = client.options(
            "/v1/embeddings",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"},
        )  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        got = client.post("/v1/embeddings", json=EMBED, headers={"Origin": "https://app.example"})
        assert got.status_code == 200 and got.headers["access-control-allow-origin"] == "https://app.example"
        other = client.post("/v1/embeddings", json=EMBED, headers={"Origin": "https://other.example"})
        assert other.status_code == 403


def test_basic_auth_is_taken_on_the_page_only(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    with TestClient(build_api(context(store, Gate(), api_key=KEY)), base_url=BASE) as client:
        basic = {"Authorization": "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()}
        # a browser replays Basic credentials by itself: they must not open the JSON routes
        got = client.get("/v1/models", headers=basic)
        assert got.status_code == 401 and got.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        # the probes need no key (not warmed up here: /ready says 503, not 401)
        assert client.get("/live").status_code == 200 and client.get("/ready").status_code == 503


def test_past_the_bound_requests_get_429_at_once_and_probes_never_wait(
    served: tuple[TestClient, APIContext, Gate],
) -> None:
    client, ctx, model = served
    model.gate.clear()
    model.entered.clear()
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(client.post, "/v1/embeddings", json=EMBED) for _ in range(2)]  # max_in_flight=2
        assert model.entered.wait(timeout=60)
        deadline = time.monotonic() + 60
        while ctx.metrics.in_flight._value.get() < 2:  # both admitted (one computing, one queued)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = client.post("/v1/embeddings", json=EMBED)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert client.post("/v1/search", json={"index": "docs", "query": "alpha"}).status_code == 429
        # while the model is held, the probes and /metrics answer (they run on the event loop), and reads are
        # not counted (they send no work; some are long-lived event streams)
        assert client.get("/health").status_code == 200 and client.get("/live").status_code == 200
        assert client.get("/v1/indexes").status_code == 200
        metrics = client.get("/metrics").text
        assert 'nvrag_refused_requests_total{reason="requests"} 2.0' in metrics
        model.gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
    assert client.post("/v1/embeddings", json=EMBED).status_code == 200  # the bound frees with the work
    metrics = client.get("/metrics").text
    assert f'nvrag_queue_seconds_count{{model="{FAKE_NAME}"}}' in metrics
    assert f'nvrag_compute_seconds_count{{model="{FAKE_NAME}"}}' in metrics


def test_a_full_scheduler_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    model = Gate()
    ctx = context(store, model)
    scheduler = ctx.embedder_for(FAKE_NAME)
    assert isinstance(scheduler, Scheduler)
    scheduler.queue.max_queued = 1
    with TestClient(build_api(ctx), base_url=BASE) as client, ThreadPoolExecutor(2) as pool:
        model.gate.clear()
        held = pool.submit(client.post, "/v1/embeddings", json=EMBED)
        assert model.entered.wait(timeout=60)
        queued = pool.submit(client.post, "/v1/embeddings", json=EMBED)
        deadline = time.monotonic() + 60
        while scheduler.queued < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        got = client.post("/v1/embeddings", json=EMBED)
        assert got.status_code == 429 and got.json()["error"]["code"] == "queue_full"
        assert int(got.headers["retry-after"]) >= 1
        model.gate.set()
        assert held.result().status_code == queued.result().status_code == 200


def test_ready_only_after_every_model_ran_a_forward_pass(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    model = Gate()
    model.gate.clear()
    told: list[str | None] = []
    ctx = context(store, model, on_ready=told.append)
    with TestClient(build_api(ctx), base_url=BASE) as client:
        warming = threading.Thread(target=ctx.warm)
        warming.start()
        assert model.entered.wait(timeout=60)
        for probe in ("/health", "/ready"):
            got = client.get(probe)
            assert got.status_code == 503 and got.json()["error"]["code"] == "loading"
        assert client.get("/live").json()["ready"] is False
        assert told == []
        model.gate.set()
        warming.join(timeout=60)
        assert client.get("/ready").status_code == 200 and told == [None]
        assert model.forward_calls  # the warm-up ran the model, not just loaded it


def test_a_failed_warm_up_is_reported_and_keeps_the_server_unready(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    model = Gate()
    told: list[str | None] = []
    ctx = context(store, model, on_ready=told.append)

    def broken(name: str) -> Embedder:
        raise RuntimeError("weights are not there")

    ctx.embedder_for = broken
    ctx.warm()
    with TestClient(build_api(ctx), base_url=BASE) as client:
        got = client.get("/ready")
        assert got.status_code == 503 and "weights are not there" in got.json()["error"]["message"]
    assert told and told[0] is not None and "weights are not there" in told[0]


def test_metric_labels_come_from_a_fixed_set(served: tuple[TestClient, APIContext, Gate]) -> None:
    client = served[0]
    before = len(client.get("/metrics").content)
    for i in range(200):
        client.request(f"JUNK{i}", f"/made/up/{i}")
        client.get(f"/v1/indexes/no-such-{i}")
    text = client.get("/metrics").text
    assert "JUNK" not in text and "made/up" not in text and "no-such" not in text
    assert 'method="other"' in text and 'route="unmatched"' in text
    assert len(text) < before + 20_000  # a few new series, not hundreds


def test_the_api_replaces_and_deletes_only_its_own_documents(served: tuple[TestClient, APIContext, Gate]) -> None:
    client, ctx, _ = served  # "d1" was indexed by a program (source memory:d1), not through the API
    got = client.post("/v1/indexes/docs/documents", json=[{"id": "d1", "text": "planted"}, {"id": "mine", "text": "x"}])
    assert got.status_code == 200
    report = got.json()
    assert report["documents"] == 1 and [f["source"] for f in report["failures"]] == ["api:d1"]
    refused = client.delete("/v1/indexes/docs/documents/d1")
    assert refused.status_code == 400 and "was added from a file or by a program" in refused.json()["error"]["message"]
    assert client.delete("/v1/indexes/docs/documents/mine").status_code == 200
    forced = client.post(
        "/v1/indexes/docs/documents?replace_other_origins=true", json=[{"id": "d1", "text": "replaced on purpose"}]
    )
    assert forced.status_code == 200 and forced.json()["failures"] == []
    assert client.delete("/v1/indexes/docs/documents/d1?replace_other_origins=true").status_code == 200
    assert ctx.store.open("docs").count() == 0


def test_an_index_lists_its_documents(served: tuple[TestClient, APIContext, Gate]) -> None:
    client = served[0]
    got = client.get("/v1/indexes/docs/documents")
    assert got.status_code == 200
    (listed,) = got.json()["data"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", listed.pop("updated"))
    assert listed == {"id": "d1", "origin": "path", "source": "memory:d1", "chunks": 1}
    assert client.get("/v1/indexes/nope/documents").json()["error"]["code"] == "index_not_found"
    # a page at a time, bounded whatever the client asks
    assert client.get("/v1/indexes/docs/documents?offset=1").json()["data"] == []
    assert client.get("/v1/indexes/docs/documents?limit=100000").status_code == 422


def test_every_route_that_embeds_counts_its_tokens(served: tuple[TestClient, APIContext, Gate]) -> None:
    """Searches count the tokens of their queries as /v1/embeddings counts its inputs' (one counter, fed by
    the scheduler for every caller)."""
    client, ctx, model = served

    def counted() -> float:
        return ctx.metrics.tokens.labels(FAKE_NAME)._value.get()  # type: ignore[no-any-return]

    before = counted()
    assert client.post("/v1/search", json={"index": "docs", "query": "alpha beta", "k": 1}).status_code == 200
    prefix = model.query_prefix(None, ctx.store.manifest("docs").query_template)
    searched = len(model.tokenize(["alpha beta"], prefix)[0])
    assert counted() == before + searched
    assert client.post("/v1/embeddings", json=EMBED).status_code == 200
    assert counted() == before + searched + len(model.tokenize(EMBED["input"], "")[0])
