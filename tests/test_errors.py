"""Domain errors carry what to do as a structured hint, and each edge renders it in its own terms: the command
line's options on the CLI, a request's fields over HTTP (``param`` names the field), to an agent and on the
page. Checked with real errors from the code that raises them: the LLM reranker's query with no room left, a
full data directory, an index whose weights moved."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nvrag.api import build_api
from nvrag.errors import ConfigError, Hint, InputError, ModelUnavailableError, OverloadedError, StorageError
from nvrag.indexer import IndexRequest
from nvrag.reranker import load_reranker
from nvrag.store import LanceStore
from nvrag.store.failures import storage_error
from tests.api.test_rerank_api import AUTH, BASE, api
from tests.conftest import REPO

QWEN = REPO.parent / "shared" / "fixtures" / "family" / "qwen3-reranker"


def test_each_edge_renders_the_hint_in_its_own_terms() -> None:
    hinted = InputError("no room", hint=Hint("raise --max-length", "shorten the query", "query"))
    assert str(hinted) == hinted.for_cli() == "no room; raise --max-length"
    assert hinted.for_api() == "no room; shorten the query"
    operators = ConfigError("cannot write", hint=Hint("choose another --db"))  # nothing a client can change
    assert (operators.for_cli(), operators.for_api()) == ("cannot write; choose another --db", "cannot write")
    plain = ConfigError("bad value")
    assert str(plain) == plain.for_api() == "bad value"
    copied = pickle.loads(pickle.dumps(hinted))  # errors cross process boundaries (Ray workers)
    assert copied.hint == hinted.hint and str(copied) == str(hinted)
    assert pickle.loads(pickle.dumps(OverloadedError("busy", 7))).retry_after == 7


def test_over_http_an_llm_reranker_s_refusal_names_the_field_not_the_flag(tmp_path: Path) -> None:
    reranker = load_reranker(QWEN, dtype="float32", max_length=100)
    with pytest.raises(InputError) as raised:
        reranker.score("word " * 200, ["a document"])
    assert str(raised.value).endswith("max length 100; shorten them or raise --max-length")  # the CLI's words
    ctx = api(LanceStore(str(tmp_path / "db")), reranker)
    with TestClient(build_api(ctx), base_url=BASE, headers=AUTH) as client:
        refused = client.post("/v1/rerank", json={"query": "word " * 200, "documents": ["a document"]})
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["param"] == "query"
    assert error["message"].endswith("within the reranker's max length 100; shorten them")
    assert "--" not in error["message"]


def test_over_http_a_full_disk_says_what_the_operator_must_do(tmp_path: Path) -> None:
    full = storage_error("/srv/nvrag", errno.ENOSPC)
    assert str(full) == (
        "the data directory /srv/nvrag is full (No space left on device): free space there (or choose another "
        "--db), then run the same command again; it continues where it stopped"
    )
    ctx = api(LanceStore(str(tmp_path / "db")), None)

    def run_index(request: IndexRequest) -> object:
        raise full

    ctx.run_index = run_index  # type: ignore[assignment]
    with TestClient(build_api(ctx), base_url=BASE, headers=AUTH) as client:
        refused = client.post("/v1/indexes/docs/documents", json=[{"id": "a", "text": "x"}])
    assert refused.status_code == 507 and refused.json()["error"] == {
        "message": "the data directory /srv/nvrag is full (No space left on device): the server's operator must "
        "free space there; then send the request again (what was committed is kept)",
        "type": "insufficient_storage_error",
        "code": "storage_unavailable",
        "param": None,
    }
    assert isinstance(full, StorageError)


def test_an_index_whose_weights_moved_names_the_option_only_on_the_cli(tmp_path: Path) -> None:
    from nvrag.embedder.pinning import weights_for_index
    from tests.store.test_lancedb_store import manifest

    built = manifest(4).__class__(**{**manifest(4).__dict__, "model_path": str(tmp_path / "gone")})
    with pytest.raises(ModelUnavailableError) as raised:
        weights_for_index(built, None)
    assert str(raised.value).endswith("which no longer holds a checkpoint; pass --model-path with its weights")
    assert raised.value.for_api().endswith("which no longer holds a checkpoint")
