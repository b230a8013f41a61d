"""Wiring: the one place that picks an indexing engine and its model, and keeps the UI's upload model loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrag.app.services import Services
from nvrag.app.serving import pooled_loader
from nvrag.app.settings import Settings
from nvrag.app.wiring import index_engine, open_store
from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError, ModelMismatchError
from nvrag.indexer import Indexer, IndexRequest, ItemsSource, PathSource
from nvrag.indexer.ray_engine import RayEngine
from nvrag.schema import Document
from nvrag.ui import callbacks
from nvrag.ui.callbacks import UIContext

FAKE = "nvrag/fake-wordlen"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    lines = [{"id": "a", "text": "alpha beta gamma"}, {"id": "b", "text": "delta epsilon"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_wiring_picks_the_engine_the_request_names(tmp_path: Path, corpus: Path) -> None:
    settings = Settings(db=str(tmp_path / "db"), model=FAKE)
    store = open_store(settings)
    local, choice = index_engine(settings, store, IndexRequest("t", PathSource(corpus)))
    assert type(local) is Indexer and choice.name == FAKE and local.embedder.name == FAKE
    ray, _ = index_engine(settings, store, IndexRequest("t", PathSource(corpus), engine="ray"))
    assert type(ray) is RayEngine  # made, not started: nothing has run yet
    assert store.list_indexes() == []
    report = local.run(IndexRequest("t", PathSource(corpus)))
    assert (report.created, report.documents, report.chunks_added) == (True, 2, 2)


def test_an_existing_index_uses_its_model_and_refuses_another_before_loading_it(tmp_path: Path, corpus: Path) -> None:
    settings = Settings(db=str(tmp_path / "db"))
    store = open_store(settings)
    Indexer(store, WordLengthEmbedder()).run(IndexRequest("t", PathSource(corpus)))
    engine, choice = index_engine(settings, store, IndexRequest("t", PathSource(corpus)))
    assert (choice.name, choice.reason) == (FAKE, f"{FAKE}, the model index 't' was built with")
    assert engine.embedder.name == FAKE
    # NV-Embed-v2 has no weights here: had wiring tried to load it, the error would say so
    with pytest.raises(ModelMismatchError) as raised:
        index_engine(settings, store, IndexRequest("t", PathSource(corpus), model="nvidia/NV-Embed-v2"))
    assert str(raised.value) == (
        f"index 't' was built with {FAKE}; it cannot be searched or extended with nvidia/NV-Embed-v2 (a different "
        f"vector space). Leave out --model to use {FAKE}, or build a new index with nvidia/NV-Embed-v2, or add "
        "--reembed to rebuild this index with nvidia/NV-Embed-v2"
    )


def test_the_ray_engine_refuses_a_store_that_writes_in_process_only_before_writing(
    tmp_path: Path, corpus: Path
) -> None:
    settings = Settings(db=str(tmp_path / "db"), model=FAKE, store="faiss")
    store = open_store(settings)
    engine, _ = index_engine(settings, store, IndexRequest("t", PathSource(corpus), engine="ray"))
    with pytest.raises(ConfigError) as raised:
        engine.run(IndexRequest("t", PathSource(corpus), engine="ray"))
    assert str(raised.value) == (
        "--engine ray writes LanceDB indexes (FaissStore writes in this process only): unset NVRAG_STORE=faiss "
        "or use --engine local"
    )
    assert store.list_indexes() == []


def test_uploads_run_once_per_upload_with_the_model_kept_loaded(tmp_path: Path, corpus: Path) -> None:
    settings = Settings(db=str(tmp_path / "db"))
    store = open_store(settings)
    for name in ("t", "u"):
        Indexer(store, WordLengthEmbedder()).run(IndexRequest(name, PathSource(corpus)))
    services = Services(settings, store, pooled_loader(settings))
    runs: list[IndexRequest] = []

    def counted(request: IndexRequest) -> object:
        runs.append(request)
        return services.run_index(request)

    received = tmp_path / "received"
    received.mkdir()
    files = []
    for n in range(3):
        (received / f"f{n}.txt").write_text(f"uploaded file number {n} " * 3, encoding="utf-8")
        files.append(str(received / f"f{n}.txt"))
    ctx = UIContext(
        store=store,
        retriever_for=services.retriever,
        run_index=counted,  # type: ignore[arg-type]
        upload_root=tmp_path / "uploads",
        received_root=received,
    )
    assert callbacks.upload(ctx, "t", files).startswith("**Indexed into t:** 3 documents, 3 chunks added")
    assert len(runs) == 1  # every file of the upload in one run
    (model,) = services.loaded()
    assert callbacks.upload(ctx, "u", files[:1]).startswith("**Indexed into u:** 1 documents, 1 chunks added")
    assert len(runs) == 2 and services.loaded() == [model]  # the loaded model was reused
    assert isinstance(runs[0].source, ItemsSource) and runs[0].uploads
    # searches load the query-only instance of the same model once, and keep it while the index is unchanged
    first = services.retriever("t")
    assert services.retriever("t") is first and len(services.loaded()) == 2
    assert services.retriever("u").embedder is first.embedder
    callbacks.upload(ctx, "t", files[1:2])  # unchanged bytes: nothing written, the same retriever
    assert services.retriever("t") is first


def test_an_upload_request_is_never_a_prune(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        IndexRequest("t", ItemsSource([Document("upload:x.txt", "x", "/x")], uploads=True), prune=True)
