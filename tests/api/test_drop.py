"""DELETE /v1/indexes/{name} in process: an index of API documents is dropped; one holding documents added
another way only with replace_other_origins; a busy index is 409, an unknown one 404, searches forget it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from nvrag.api import build_api
from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer
from nvrag.schema import Document
from nvrag.store import LanceStore
from tests.api.test_routes import BASE, Gate, context


def test_drop_over_http(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    Indexer(store, WordLengthEmbedder()).index("mixed", [Document("p1", "from a path", str(tmp_path / "p1.txt"))])
    with TestClient(build_api(context(store, Gate())), base_url=BASE) as client:
        added = client.post("/v1/indexes/api-only/documents", json=[{"id": "a1", "text": "alpha beta"}])
        assert added.status_code == 200, added.text
        assert client.post("/v1/search", json={"index": "api-only", "query": "alpha"}).status_code == 200
        got = client.delete("/v1/indexes/api-only")
        assert got.status_code == 200 and got.json() == {"index": "api-only", "dropped": True, "rows_removed": 1}
        assert not store.exists("api-only")
        assert client.post("/v1/search", json={"index": "api-only", "query": "alpha"}).status_code == 404
        assert client.delete("/v1/indexes/api-only").status_code == 404
        refused = client.delete("/v1/indexes/mixed")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "other_origins"
        assert "1 from path" in refused.json()["error"]["message"] and store.exists("mixed")
        with store.writing("mixed"):  # another writer holds it
            busy = client.delete("/v1/indexes/mixed?replace_other_origins=true")
            assert busy.status_code == 409 and store.exists("mixed")
        assert client.delete("/v1/indexes/mixed?replace_other_origins=true").status_code == 200
        assert not store.exists("mixed")
