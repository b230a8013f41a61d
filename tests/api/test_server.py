"""`nvrag serve` as programs meet it: a live server in a subprocess, called with the official openai client
(unchanged, base_url pointed at it) and with httpx. Its vectors are compared with `nvrag embed`'s, its hits
with `nvrag search --json`'s."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from nvrag.embedder import load_embedder
from tests.conftest import demo_copy
from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789abcdef"
MINILM = "all-MiniLM-L6-v2"
TEXTS = ["The quick brown fox.", "", "café naïve — unicode", "short " * 300]  # the last: over 256 tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(db: Path, *args: str) -> Iterator[str]:
    """A live `nvrag serve` until the test module ends; yields its base URL once /health says 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db))
    process = subprocess.Popen(
        [sys.executable, "-m", "nvrag", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
        while True:
            assert process.poll() is None, f"the server exited: {process.communicate()[1]}"
            assert time.monotonic() < deadline, "the server never became healthy"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def db(built_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_copy(built_demo, tmp_path_factory)  # `nvrag index` of the demo corpus (tests/conftest.py)


@pytest.fixture(scope="module")
def url(db: Path) -> Iterator[str]:
    # float32: these tests compare vectors at 1e-6 (with `nvrag embed`'s, and batched with alone); in bfloat16 a
    # vector also depends, by about 1e-3, on the batch it was computed in
    yield from serve(db, "--dtype", "float32")


@pytest.fixture(scope="module")
def keyed(db: Path) -> Iterator[str]:
    yield from serve(db, "--api-key", KEY, "--index", "demo", "--dtype", "float32")


def cli_vectors(db: Path, tmp: Path, *args: str) -> np.ndarray:
    path = tmp / "texts.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TEXTS), encoding="utf-8")
    out = tmp / "vectors.npy"
    done = nvrag("embed", "--input", str(path), "--model", MINILM, "-o", str(out), "--dtype", "float32", *args, db=db)
    assert done.returncode == 0, done.stderr
    return np.load(out)


def test_the_openai_client_gets_the_vectors_nvrag_embed_gives(url: str, db: Path, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    documents = cli_vectors(db, tmp_path)
    # left to itself the client asks for base64 and decodes it; asked for floats, it gets JSON numbers
    for extra in ({}, {"encoding_format": "float"}):
        got = client.embeddings.create(model=MINILM, input=TEXTS, **extra)  # type: ignore[arg-type]
        assert [d.index for d in got.data] == [0, 1, 2, 3] and got.model == MINILM
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), documents, atol=1e-6)
    tokens = sum(len(ids) for ids in load_embedder(MINILM).tokenize(TEXTS, ""))  # as embedded: truncated to 256
    assert got.usage.prompt_tokens == got.usage.total_tokens == tokens and 256 < tokens < 300
    queries = cli_vectors(db, tmp_path, "--query", "--task", "SciFact")
    asked = client.embeddings.create(model="minilm", input=TEXTS, extra_body={"input_type": "query", "task": "SciFact"})
    np.testing.assert_allclose(np.array([d.embedding for d in asked.data]), queries, atol=1e-6)
    one = client.embeddings.create(model=MINILM, input="The quick brown fox.")
    np.testing.assert_allclose(one.data[0].embedding, documents[0], atol=1e-6)
    raw = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM, "input": TEXTS[:1], "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, documents[0], atol=1e-6)


def test_models_list_each_models_dimension_tokens_and_license(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    (card,) = client.models.list().data
    assert (card.id, card.object, card.owned_by) == (MINILM, "model", "nvrag")
    extra = card.model_extra or {}
    assert (extra["dimension"], extra["max_tokens"], extra["license"]) == (384, 256, "Apache-2.0")


SCORES = ("score", "dense_score")


def unscored(hits: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in h.items() if k not in SCORES} for h in hits]


def test_search_returns_the_hits_nvrag_search_json_gives(url: str, db: Path) -> None:
    for mode, extra in (("dense", []), ("hybrid", ["--mode", "hybrid"])):
        query = ["compute a digest of a file", "--index", "demo", "-k", "4", "--json", "--dtype", "float32"]
        cli = nvrag("search", *query, *extra, db=db)
        assert cli.returncode == 0, cli.stderr
        body = {"index": "demo", "query": "compute a digest of a file", "k": 4, "mode": mode}
        answer = httpx.post(f"{url}/v1/search", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        got, want = answer.json(), json.loads(cli.stdout)
        assert (got["index"], got["model"]) == ("demo", MINILM)
        # the same hits; the scores agree to float32 precision (the CLI's query runs on MiniLM's NumPy engine, the
        # server's on PyTorch: both float32)
        assert unscored(got["hits"]) == unscored(want)
        for name in SCORES:
            assert [h.get(name) for h in got["hits"]] == pytest.approx([h.get(name) for h in want], abs=1e-6)
    indexes = httpx.get(f"{url}/v1/indexes").json()["data"]
    assert [(i["name"], i["model"], i["dimension"]) for i in indexes] == [("demo", MINILM, 384)]
    one = httpx.get(f"{url}/v1/indexes/demo").json()
    assert one["rows"] == indexes[0]["rows"] > 0 and one["manifest"]["model"] == MINILM


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/embeddings", {"model": MINILM, "input": "x", "dimensions": 64}, 400, "unsupported_dimensions"),
        ("POST", "/v1/embeddings", {"model": "gpt-4", "input": "x"}, 404, "model_not_found"),
        ("POST", "/v1/embeddings", {"model": MINILM, "input": []}, 400, "empty_input"),
        ("POST", "/v1/embeddings", {"model": MINILM, "input": [1, 2, 3]}, 422, "invalid_body"),
        ("POST", "/v1/embeddings", {"model": MINILM, "input": "x", "task": "SciFact"}, 400, "invalid_value"),
        (
            "POST",
            "/v1/embeddings",
            {"model": MINILM, "input": "x", "input_type": "query", "task": "Nope"},
            400,
            "invalid_instruction",
        ),
        ("POST", "/v1/search", {"index": "nope", "query": "x"}, 404, "index_not_found"),
        ("POST", "/v1/search", {"index": "demo", "query": "x", "filter": "lang =="}, 400, "invalid_filter"),
        ("POST", "/v1/search", {"index": "demo", "query": "x", "k": 0}, 422, "invalid_body"),
        ("POST", "/v1/search", {"index": "demo", "query": "   "}, 400, "empty_query"),
        ("GET", "/v1/indexes/nope", None, 404, "index_not_found"),
        ("GET", "/v1/nothing-here", None, 404, None),
    ],
)
def test_errors_come_in_openai_shape(
    url: str, method: str, path: str, body: object, status: int, code: str | None
) -> None:
    answer = httpx.request(method, f"{url}{path}", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert set(error) == {"message", "type", "code", "param"}


def test_bodies_are_bounded_before_they_are_read(url: str) -> None:
    huge = httpx.post(
        f"{url}/v1/embeddings",
        content=b"{" + b" " * (17 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    many = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM, "input": ["x"] * 2049})
    assert many.status_code == 400 and many.json()["error"]["code"] == "too_many"


def test_an_api_key_guards_every_route_but_health(keyed: str) -> None:
    assert httpx.get(f"{keyed}/health").status_code == 200
    for headers, code in (({}, "no_key"), ({"Authorization": "Bearer wrong-key-0123456789"}, "invalid_api_key")):
        for method, path in (("GET", "/v1/models"), ("GET", "/v1/indexes"), ("POST", "/v1/search")):
            answer = httpx.request(method, f"{keyed}{path}", headers=headers, json={"index": "demo", "query": "x"})
            assert answer.status_code == 401 and answer.json()["error"]["code"] == code, (path, answer.text)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed}/v1", api_key="wrong-key-0123456789").embeddings.create(model=MINILM, input="x")
    client = openai.OpenAI(base_url=f"{keyed}/v1", api_key=KEY)
    assert len(client.embeddings.create(model=MINILM, input="x").data[0].embedding) == 384
    ok = httpx.post(
        f"{keyed}/v1/search", headers={"Authorization": f"Bearer {KEY}"}, json={"index": "demo", "query": "x"}
    )
    assert ok.status_code == 200 and ok.json()["hits"]


def test_another_address_without_a_key_is_refused(db: Path) -> None:
    refused = nvrag("serve", "--host", "0.0.0.0", "--port", str(free_port()), db=db, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith(
        "error: --host 0.0.0.0: other machines could call the API without a key; give --api-key KEY"
    )
    short = nvrag("serve", "--api-key", "short", "--port", str(free_port()), db=db, timeout=120)
    assert short.returncode == 2 and "use at least 16 characters" in short.stderr


def test_documents_are_indexed_incrementally_searched_and_deleted(url: str, db: Path) -> None:
    docs = [
        {"id": "a", "text": "Salmon swim upstream to spawn in the rivers where they hatched.", "title": "Salmon"},
        {"id": "b", "text": "Compilers translate source code into machine code.", "metadata": {"lang": "en", "n": 2}},
    ]
    first = httpx.post(f"{url}/v1/indexes/notes/documents", json=docs, timeout=120)
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["index"], report["documents"], report["chunks_added"], report["failed"]) == ("notes", 2, 2, 0)
    again = httpx.post(f"{url}/v1/indexes/notes/documents", json=docs, timeout=120).json()
    assert (again["chunks_added"], again["chunks_unchanged"]) == (0, 2)  # nvrag index's incremental semantics
    changed = [{**docs[1], "text": "Compilers turn source code into machine code, in passes."}]
    third = httpx.post(f"{url}/v1/indexes/notes/documents", json=changed, timeout=120).json()
    assert (third["chunks_added"], third["chunks_removed"]) == (1, 1)

    found = httpx.post(f"{url}/v1/search", json={"index": "notes", "query": "fish migrating to breed", "k": 1})
    (hit,) = found.json()["hits"]
    assert (hit["doc_id"], hit["title"], hit["source"]) == ("a", "Salmon", "api:a")
    filtered = httpx.post(f"{url}/v1/search", json={"index": "notes", "query": "code", "filter": "lang = en"}).json()
    assert [h["doc_id"] for h in filtered["hits"]] == ["b"]
    info = json.loads(nvrag("info", "--json", db=db).stdout)
    (notes,) = [i for i in info["indexes"] if i["manifest"]["name"] == "notes"]
    assert notes["rows"] == 2 and notes["manifest"]["model"] == MINILM

    gone = httpx.delete(f"{url}/v1/indexes/notes/documents/a")
    assert gone.status_code == 200 and gone.json() == {
        "index": "notes",
        "id": "a",
        "deleted": True,
        "chunks_removed": 1,
    }
    again_gone = httpx.delete(f"{url}/v1/indexes/notes/documents/a")
    assert again_gone.status_code == 404 and again_gone.json()["error"]["code"] == "document_not_found"
    left = httpx.post(f"{url}/v1/search", json={"index": "notes", "query": "fish", "k": 5}).json()["hits"]
    assert [h["doc_id"] for h in left] == ["b"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[" * 100 + b"]" * 100, 400, "invalid_body"),  # nested past the JSON depth limit
        (b"{not json", 400, "invalid_body"),
        (json.dumps([{"id": "x"}]).encode(), 422, "invalid_body"),  # no text
        (json.dumps([{"id": "x", "text": "t", "extra": 1}]).encode(), 422, "invalid_body"),
        (json.dumps({"id": "x", "text": "t"}).encode(), 422, "invalid_body"),  # not a list
        (json.dumps([{"id": "upload:x.txt", "text": "t"}]).encode(), 200, None),  # reported, not indexed
    ],
)
def test_hostile_documents_are_refused_in_one_line(url: str, body: bytes, status: int, code: str | None) -> None:
    answer = httpx.post(
        f"{url}/v1/indexes/hostile/documents", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    if code is not None:
        assert answer.json()["error"]["code"] == code
    else:
        report = answer.json()
        assert report["documents"] == 0 and report["failed"] == 1
        assert "reserved for files uploaded in the web UI" in report["failures"][0]["reason"]
    bad_name = httpx.post(f"{url}/v1/indexes/bad%20name/documents", json=[{"id": "x", "text": "t"}])
    assert bad_name.status_code == 400 and "invalid index name" in bad_name.json()["error"]["message"]


def test_metrics_count_requests_by_route_and_status_and_the_tokens_embedded(url: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{url}/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    ok = ("nvrag_requests_total", (("method", "POST"), ("route", "/v1/embeddings"), ("status", "200")))
    bad = ("nvrag_requests_total", (("method", "POST"), ("route", "/v1/embeddings"), ("status", "404")))
    tokens = ("nvrag_tokens_embedded_total", (("model", MINILM),))
    before = samples()
    assert httpx.post(f"{url}/v1/embeddings", json={"model": MINILM, "input": ["one two", "three"]}).status_code == 200
    assert httpx.post(f"{url}/v1/embeddings", json={"model": "nope", "input": "x"}).status_code == 404
    assert httpx.get(f"{url}/v1/indexes/some/thing/else").status_code == 404
    after = samples()
    assert after[ok] == before.get(ok, 0) + 1 and after[bad] == before.get(bad, 0) + 1
    assert after[tokens] == before.get(tokens, 0) + 4 + 3  # [CLS] one two [SEP], [CLS] three [SEP]
    assert ("nvrag_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404"))) in after
    assert not any("some/thing" in str(labels) for _, labels in after)  # raw paths never become labels
    assert after[("nvrag_requests_in_flight", ())] == 1  # the /metrics request itself


def test_concurrent_requests_are_batched_together_and_get_what_they_get_alone(url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.parser import text_string_to_metric_families

    def request(i: int) -> dict[str, object]:
        words = " ".join(f"word{j}" for j in range(1 + (i * 37) % 200))  # 1 to 200 words: mixed lengths
        body: dict[str, object] = {"model": MINILM, "input": [words, f"text {i}"][: 1 + i % 2]}
        if i % 3 == 0:
            body |= {"input_type": "query", "instruction": f"find passage {i % 2}"}
        return body

    def send(body: dict[str, object]) -> np.ndarray:
        answer = httpx.post(f"{url}/v1/embeddings", json=body, timeout=300)
        while answer.status_code == 429:  # past --max-concurrent-requests (32): retry as told, as clients do
            time.sleep(float(answer.headers["retry-after"]))
            answer = httpx.post(f"{url}/v1/embeddings", json=body, timeout=300)
        assert answer.status_code == 200, answer.text
        return np.array([d["embedding"] for d in answer.json()["data"]])

    def passes() -> float:
        text = httpx.get(f"{url}/metrics").text
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "nvrag_forward_batch_requests"]
        return sum(s.value for s in family.samples if s.name.endswith("_count"))

    bodies = [request(i) for i in range(64)]
    start = passes()
    alone = [send(b) for b in bodies]  # one at a time: each request in forward passes of its own
    middle = passes()
    with ThreadPoolExecutor(64) as pool:
        concurrent = list(pool.map(send, bodies))
    for a, c in zip(alone, concurrent, strict=True):
        np.testing.assert_allclose(c, a, atol=1e-6)
    assert passes() - middle < (middle - start) / 2  # together, far fewer forward passes for the same work


def test_a_documents_request_meeting_another_writer_gets_409(url: str, db: Path) -> None:
    from nvrag.store import LanceStore

    docs = [{"id": "x", "text": "a document written while another process holds the lock"}]
    assert httpx.post(f"{url}/v1/indexes/locked/documents", json=docs, timeout=120).status_code == 200
    with LanceStore(str(db)).writing("locked"):  # this test process is the index's writer now
        answer = httpx.post(f"{url}/v1/indexes/locked/documents", json=docs, timeout=120)
        gone = httpx.delete(f"{url}/v1/indexes/locked/documents/x")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "index_busy"
    assert f"pid {os.getpid()}" in answer.json()["error"]["message"]
    assert gone.status_code == 409
    assert httpx.delete(f"{url}/v1/indexes/locked/documents/x").status_code == 200  # the lock is free again


def test_truncate_false_refuses_a_long_input_and_a_full_queue_answers_429(url: str, db: Path) -> None:
    long = "word " * 400  # over MiniLM's 256 tokens
    cut = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM, "input": long}, timeout=120)
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 256
    refused = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM, "input": ["ok", long], "truncate": False})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "input_too_long"
    assert "input 1 is longer than all-MiniLM-L6-v2's 256 tokens" in refused.json()["error"]["message"]

    from concurrent.futures import ThreadPoolExecutor

    body = {"model": MINILM, "input": [f"{i} {long}" for i in range(64)]}  # seconds of work each
    with contextlib.contextmanager(serve)(db, "--max-queued-requests", "1") as small:

        def send(_: int, to: str = small) -> httpx.Response:
            return httpx.post(f"{to}/v1/embeddings", json=body, timeout=600)

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(send, range(24)))
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) == {200, 429} and statuses.count(200) >= 1, statuses
        busy = next(a for a in answers if a.status_code == 429).json()["error"]
        assert busy["code"] == "queue_full" and "already queued" in busy["message"]


def test_a_one_word_search_overtakes_a_maximal_embeddings_request(url: str) -> None:
    """The scheduler cuts a large request into token-budget slices: a search sent while it runs is answered
    before it ends (in the forward pass after the one in flight), not behind it. Order, not wall time, is
    asserted."""
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.parser import text_string_to_metric_families

    def rows_embedded() -> float:
        text = httpx.get(f"{url}/metrics").text
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "nvrag_forward_batch_rows"]
        return sum(s.value for s in family.samples if s.name.endswith("_sum"))

    big = {"model": MINILM, "input": [f"{i} " + "word " * 300 for i in range(256)]}  # 256 x 256 tokens
    before = rows_embedded()
    with ThreadPoolExecutor(1) as pool:
        large = pool.submit(httpx.post, f"{url}/v1/embeddings", json=big, timeout=600)
        deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
        while rows_embedded() == before:  # the large request is being computed
            assert time.monotonic() < deadline and not large.done()
            time.sleep(0.02)
        search = httpx.post(f"{url}/v1/search", json={"index": "demo", "query": "hash", "k": 1}, timeout=300)
        one = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM, "input": "hash"}, timeout=300)
        assert search.status_code == 200 and one.status_code == 200
        assert not large.done()  # both small requests were answered while the large one was still running
        assert rows_embedded() - before < 256  # ... before all of its rows had been embedded
        assert large.result().status_code == 200
