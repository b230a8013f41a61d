"""A decoder index served in process (TestClient over the real wiring): built from a weights folder at
--dimensions 8, it is searched without naming the folder again, and /v1/embeddings cuts Matryoshka vectors to
the dimensions a request asks for, equal to the reference's cut-then-normalise goldens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from nvrag.app.serving import build_api_app
from nvrag.app.settings import Settings
from nvrag.embedder.decoder import DecoderEmbedder
from nvrag.indexer import Indexer, IndexRequest
from nvrag.indexer.request import ItemsSource
from nvrag.schema import Document
from nvrag.store import LanceStore
from tests.conftest import REPO

QWEN3 = REPO.parent / "shared" / "fixtures" / "family" / "qwen3-embedding"


def test_a_matryoshka_index_from_a_folder_is_served(tmp_path: Path) -> None:
    golden = json.loads((QWEN3 / "golden.json").read_text(encoding="utf-8"))
    weights = tmp_path / "weights"
    shutil.copytree(QWEN3, weights)
    store = LanceStore(str(tmp_path / "db"))
    embedder = DecoderEmbedder(weights, dtype="float32", dimensions=8)
    docs = [Document("a", "The capital of France is Paris.", "a"), Document("b", "Gravity pulls.", "b")]
    Indexer(store, embedder).run(IndexRequest("q", ItemsSource(docs)))
    assert store.manifest("q").model_path == str(weights.resolve())

    settings = Settings.from_env(db=str(tmp_path / "db"), dtype="float32")
    app = build_api_app(settings, store, indexes=None, model=None, model_path=None, api_key=None, max_inputs=64)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        found = client.post("/v1/search", json={"index": "q", "query": "capital of France", "k": 2})
        assert found.status_code == 200, found.text
        assert {h["doc_id"] for h in found.json()["hits"]} == {"a", "b"}

        case = next(c for c in golden["cases"] if c["name"] == "query_card_capital")
        body = {"model": embedder.name, "input": [case["items"][0]["text"]], "input_type": "query", "dimensions": 8}
        cut = client.post("/v1/embeddings", json=body)
        assert cut.status_code == 200, cut.text
        vector = np.array(cut.json()["data"][0]["embedding"])
        np.testing.assert_allclose(vector, case["items"][0]["embedding_mrl8"], atol=1e-5)
        too_wide = client.post("/v1/embeddings", json=body | {"dimensions": 17})
        assert too_wide.status_code == 400 and too_wide.json()["error"]["code"] == "unsupported_dimensions"
