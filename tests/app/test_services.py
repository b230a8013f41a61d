"""The model pool's memory budget (app/services.py): several models loaded at once within it, the least recently
used unloaded first, one larger than the whole budget refused, and an unloaded model really let go (its
scheduler's workers ended, its retrievers dropped, nothing left holding it)."""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import pytest

from nvrag.api.metrics import Metrics
from nvrag.app.services import Purpose, Services
from nvrag.app.settings import Settings
from nvrag.app.wiring import open_store
from nvrag.embedder import Embedder, WordLengthEmbedder
from nvrag.embedder.scheduler import Scheduler
from nvrag.errors import ConfigError, ModelMemoryError, OverloadedError
from nvrag.indexer import Indexer, IndexRequest, ItemsSource
from nvrag.schema import Document

FAKE = "nvrag/fake-wordlen"
SIZES = {FAKE: 100, "model-b": 100, "model-c": 100, "huge": 1_000}


class Pool:
    """A loader of by-hand models whose weights take SIZES[name] bytes, counting its loads."""

    def __init__(self, *, scheduled: bool = False) -> None:
        self.loads: list[str] = []
        self.scheduled = scheduled
        self.metrics = Metrics()

    def __call__(self, name: str, model_path: Path | None, purpose: Purpose) -> Embedder:
        self.loads.append(name)
        model: Embedder = WordLengthEmbedder()
        model.weight_bytes = SIZES[name]
        if self.scheduled:
            model = self.metrics.watch(Scheduler(model))
        return model


def services(tmp_path: Path, budget: int | None, pool: Pool, *, given: bool = True) -> Services:
    settings = Settings(db=str(tmp_path / "db"))
    return Services(settings, open_store(settings), pool, shared=True, max_model_bytes=budget, refuse_oversized=given)


def test_models_stay_loaded_within_the_budget_and_the_least_recently_used_goes_first(tmp_path: Path) -> None:
    pool = Pool()
    s = services(tmp_path, 250, pool)
    a, b = s.embedder(FAKE), s.embedder("model-b")
    assert s.loaded() == [a, b] and pool.loads == [FAKE, "model-b"]  # 200 of 250 bytes: both stay
    assert s.embedder(FAKE) is a  # used again: now the most recent
    c = s.embedder("model-c")  # 300 > 250: model-b, the least recently used, is unloaded
    assert s.loaded() == [a, c]
    assert s.embedder("model-b") is not b and pool.loads == [FAKE, "model-b", "model-c", "model-b"]
    assert [m.weight_bytes for m in s.loaded()] == [100, 100]  # FAKE went, as the least recent then


def test_no_budget_keeps_every_model(tmp_path: Path) -> None:
    s = services(tmp_path, None, Pool())
    loaded = [s.embedder(n) for n in (FAKE, "model-b", "model-c", "huge")]
    assert s.loaded() == loaded


def test_a_model_larger_than_the_budget_is_refused_naming_both_sizes(tmp_path: Path) -> None:
    pool = Pool()
    s = services(tmp_path, 250, pool)
    kept = s.embedder(FAKE)
    with pytest.raises(ModelMemoryError) as refused:
        s.embedder("huge")
    assert str(refused.value) == (
        "huge takes about 1000 bytes once loaded, more than the model memory budget (250 bytes); raise it with "
        "--model-memory or NVRAG_MODEL_MEMORY (GiB)"
    )
    assert s.loaded() == [kept]  # nothing was unloaded for a model that cannot fit anyway


def test_under_the_default_budget_a_model_larger_than_it_loads_alone(tmp_path: Path) -> None:
    """The default budget (a share of the memory) is not the user's word: a model over it still loads, alone
    (its weights are mapped from the file); the others are unloaded first."""
    s = services(tmp_path, 250, Pool(), given=False)
    s.embedder(FAKE)
    s.embedder("model-b")
    huge = s.embedder("huge")
    assert s.loaded() == [huge]


def test_an_unloaded_model_is_let_go_with_its_retrievers_and_its_workers(tmp_path: Path) -> None:
    pool = Pool(scheduled=True)
    s = services(tmp_path, 150, pool)
    texts = ["a", "bbbb bbbb", "cccccccc cccccccc cccccccc"]  # word-length vectors tell these apart
    docs = [Document(f"d{i}", text, f"api:d{i}") for i, text in enumerate(texts)]
    Indexer(s.store, WordLengthEmbedder()).run(IndexRequest("t", ItemsSource(docs, api=True)))
    retriever = s.retriever("t")
    assert s.retriever("t") is retriever and pool.loads == [FAKE]
    first = s.loaded()[0]
    assert isinstance(first, Scheduler)
    first.embed_documents(["warm the worker"])
    workers = first.queue.workers
    assert workers and all(w.is_alive() for w in workers)
    gone = weakref.ref(first.inner)

    s.embedder("model-b")  # 200 > 150: the index's model is unloaded, and the index's retriever with it
    with pytest.raises(OverloadedError, match=f"^{FAKE} was unloaded to make room for another model; retry$"):
        first.embed_documents(["late request"])  # a caller still holding it is told to retry
    for worker in workers:
        worker.join(timeout=30)  # a guard against a hang
        assert not worker.is_alive()
    del first, retriever
    gc.collect()
    assert gone() is None  # nothing holds the model any more (the workers, the pool, the metrics' gauges)
    assert pool.metrics.exposition()  # the gauges of the unloaded model still read (as nothing queued)

    again = s.retriever("t")  # the next search loads the model again
    assert pool.loads == [FAKE, "model-b", FAKE]
    assert again.search("bbbb", 1)[0].doc_id == "d1"


def test_the_budget_comes_from_the_option_the_environment_or_a_share_of_the_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nvrag.app.serving import MODEL_MEMORY_SHARE, model_budget
    from nvrag.embedder.dtypes import memory_bytes

    monkeypatch.delenv("NVRAG_MODEL_MEMORY", raising=False)
    assert model_budget(Settings.from_env(db="x", model_memory=1.5)) == 3 * 2**29
    total = memory_bytes()
    assert total is not None and model_budget(Settings.from_env(db="x")) == int(total * MODEL_MEMORY_SHARE)
    monkeypatch.setenv("NVRAG_MODEL_MEMORY", "12")
    assert model_budget(Settings.from_env(db="x")) == 12 * 2**30
    assert model_budget(Settings.from_env(db="x", model_memory=2)) == 2 * 2**30  # the option wins
    for bad in ("twelve", "-1", "0", "nan"):
        monkeypatch.setenv("NVRAG_MODEL_MEMORY", bad)
        with pytest.raises(ConfigError) as refused:
            Settings.from_env(db="x")
        assert str(refused.value) == (
            f"NVRAG_MODEL_MEMORY={bad!r}: give the memory in GiB as a positive number, for example 12"
        )


@pytest.mark.slow
def test_a_server_whose_model_is_over_the_budget_says_so_and_stays_unready(tmp_path: Path) -> None:
    """A real `nvrag serve --model-memory` smaller than the bundled model (66 MiB in bfloat16: its matmul weights;
    the embeddings and norms stay float32): one line
    on stderr naming both sizes, and /ready answers 503 with it."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(tmp_path / "db"))
    command = [sys.executable, "-m", "nvrag", "serve", "--port", str(port), "--model", "all-MiniLM-L6-v2",
               "--dtype", "bfloat16", "--model-memory", "0.01"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
        while True:
            assert process.poll() is None and time.monotonic() < deadline
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                if answer.json()["error"]["code"] == "not_ready":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert answer.status_code == 503
        said = answer.json()["error"]["message"]
        assert said == (
            "all-MiniLM-L6-v2 takes about 66 MiB once loaded, more than the model memory budget (10 MiB); "
            "raise it with --model-memory or NVRAG_MODEL_MEMORY (GiB)"
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert f"error: not ready: {said}" in " ".join(stderr.split())
