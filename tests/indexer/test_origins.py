"""Who owns a document: PATH runs (the CLI, Python, Ray), the HTTP API and the page's uploads each replace,
delete and prune only their own documents; another origin's document is kept and reported, unless the run asks
for replace_other_origins. The fake embedder and a real LanceDB store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError
from nvrag.indexer import Indexer, IndexRequest, ItemsSource, PathSource
from nvrag.indexer.engine import delete_documents
from nvrag.indexer.loaders import document_origin
from nvrag.schema import Document
from nvrag.store import LanceStore


def api(*docs: tuple[str, str]) -> ItemsSource:
    return ItemsSource([Document(i, t, f"api:{i}") for i, t in docs], api=True)


def upload(doc_id: str, text: str) -> ItemsSource:
    return ItemsSource([Document(f"upload:{doc_id}", text, f"/data/uploads/{doc_id}")], uploads=True)


def corpus(folder: Path, docs: dict[str, str]) -> PathSource:
    folder.mkdir(exist_ok=True)
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs.items())
    (folder / "docs.jsonl").write_text(lines, encoding="utf-8")
    return PathSource(folder)


def texts(store: LanceStore) -> dict[str, str]:
    table = store.open("t")
    chunk_ids = [c for ids in table.chunk_ids_by_doc().values() for c in ids]
    return {c.doc_id: c.text for c in table.get(chunk_ids)}


def test_origins_are_read_from_what_a_document_records() -> None:
    assert document_origin("upload:a.txt", "/x/uploads/a.txt") == "upload"
    assert document_origin("a", "api:a") == "api"
    assert document_origin("a", "/home/me/docs/a.md") == "path"
    assert document_origin("a", "/home/me/api:notes.md") == "path"  # only a source that starts with api:


def test_prune_removes_only_path_documents_that_are_gone(store: LanceStore, tmp_path: Path) -> None:
    indexer = Indexer(store, WordLengthEmbedder())
    indexer.run(IndexRequest("t", corpus(tmp_path / "c", {"p1": "one two", "p2": "three four"})))
    indexer.run(IndexRequest("t", api(("a1", "sent over http"))))
    indexer.run(IndexRequest("t", upload("u.txt", "uploaded words")))
    report = indexer.run(IndexRequest("t", corpus(tmp_path / "c", {"p1": "one two"}), prune=True))
    assert report.documents_removed == 1
    assert texts(store) == {"p1": "one two", "a1": "sent over http", "upload:u.txt": "uploaded words"}


def test_the_api_does_not_replace_a_path_document_unless_asked(store: LanceStore, tmp_path: Path) -> None:
    indexer = Indexer(store, WordLengthEmbedder())
    indexer.run(IndexRequest("t", corpus(tmp_path / "c", {"shared": "from the file"})))
    report = indexer.run(IndexRequest("t", api(("shared", "planted over http"), ("new", "fine"))))
    assert report.documents == 1 and len(report.failures) == 1
    (failure,) = report.failures
    assert failure.doc_id == "shared" and "was added from a file or by a program" in failure.reason
    assert "replace_other_origins" in failure.reason
    assert texts(store) == {"shared": "from the file", "new": "fine"}
    # the same text again is no change, so no refusal
    same = indexer.run(IndexRequest("t", api(("shared", "from the file"))))
    assert same.failures == [] and same.chunks_unchanged == 1
    forced = indexer.run(IndexRequest("t", api(("shared", "replaced on purpose")), replace_other_origins=True))
    assert forced.failures == [] and texts(store)["shared"] == "replaced on purpose"


def test_a_path_run_does_not_replace_an_api_document_unless_asked(store: LanceStore, tmp_path: Path) -> None:
    indexer = Indexer(store, WordLengthEmbedder())
    indexer.run(IndexRequest("t", api(("x", "the api's text"))))
    report = indexer.run(IndexRequest("t", corpus(tmp_path / "c", {"x": "a file's text"}), prune=True))
    assert [f.doc_id for f in report.failures] == ["x"] and "through the HTTP API" in report.failures[0].reason
    assert texts(store) == {"x": "the api's text"}
    forced = IndexRequest("t", corpus(tmp_path / "c", {"x": "a file's text"}), replace_other_origins=True)
    assert indexer.run(forced).failures == [] and texts(store) == {"x": "a file's text"}


def test_deleting_through_an_origin_removes_only_its_own_documents(store: LanceStore, tmp_path: Path) -> None:
    indexer = Indexer(store, WordLengthEmbedder())
    indexer.run(IndexRequest("t", corpus(tmp_path / "c", {"p": "from the file"})))
    indexer.run(IndexRequest("t", api(("a", "from the api"))))
    with pytest.raises(ConfigError, match=r"^document 'p' of index 't' was added from a file or by a program"):
        delete_documents(store, "t", ["p"], origins={"api"})
    assert delete_documents(store, "t", ["a"], origins={"api"}) == 1
    assert delete_documents(store, "t", ["p"]) == 1  # no origins named: any (the CLI user owns the index)
    assert texts(store) == {}
