"""The Documents tab's callbacks on real LanceDB with the fake model: listing filtered by origin and text,
deleting only after confirmation, and every value escaped for Markdown."""

from __future__ import annotations

import re
from pathlib import Path

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore
from nvrag.ui import documents
from nvrag.ui.callbacks import UIContext


def context(tmp_path: Path) -> UIContext:
    store = LanceStore(str(tmp_path / "db"))
    fake = WordLengthEmbedder()
    docs = [
        Document("a", "one two", "/notes/a.txt"),
        Document("api-doc", "three", "api:api-doc"),
        Document("*x*", "six", "/notes/x.txt"),
    ]
    Indexer(store, fake).index("t", docs)
    Indexer(store, fake).index("t", [Document("upload:b.1234.md", "four five", "/up/b.md")], uploads=True)
    return UIContext(
        store=store, retriever_for=lambda n: Retriever(store.open(n), fake), run_index=Indexer(store, fake).run,
        upload_root=tmp_path / "uploads",
    )  # fmt: skip


def test_rows_are_filtered_by_origin_and_text(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert [r[:2] for r in documents.document_rows(ctx, "t")] == [
        ["*x*", "path"], ["a", "path"], ["api-doc", "api"], ["upload:b.1234.md", "upload"],
    ]  # fmt: skip
    assert len(documents.COLUMNS) == 5 and all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:]{8}Z", r[4]) for r in documents.document_rows(ctx, "t")
    )
    assert [r[0] for r in documents.document_rows(ctx, "t", "upload")] == ["upload:b.1234.md"]
    assert [r[0] for r in documents.document_rows(ctx, "t", "any", "NOTES/A")] == ["a"]  # the source, any case
    assert documents.document_rows(ctx, "nope") == []


def test_a_document_is_deleted_only_when_confirmed(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert documents.delete_document(ctx, "t", "a", False).startswith("Tick the confirmation box")
    assert len(documents.document_rows(ctx, "t")) == 4
    assert documents.delete_document(ctx, "t", " a ", True) == "**Deleted** a from t (1 chunks)."
    assert [r[0] for r in documents.document_rows(ctx, "t")] == ["*x*", "api-doc", "upload:b.1234.md"]
    assert documents.delete_document(ctx, "t", "zz", True) == "Index t has no document zz."
    assert documents.delete_document(ctx, "t", "*x*", True) == "**Deleted** \\*x\\* from t (1 chunks)."  # escaped
    assert documents.delete_document(ctx, None, "a", True) == "Choose an index first."
