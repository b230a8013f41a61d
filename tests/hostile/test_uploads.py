"""Uploads: only bytes the server received, in a namespace of their own under collision-free names; every
string shown in the Index tab escaped for Markdown, and query highlighting that never splits an entity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer, load_corpus
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore
from nvrag.ui import callbacks
from nvrag.ui.callbacks import UIContext
from nvrag.ui.render import highlight, md


@pytest.fixture
def ctx(tmp_path: Path) -> UIContext:
    store = LanceStore(str(tmp_path / "db"))
    fake = WordLengthEmbedder()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "notes.txt").write_text("the original notes indexed from the corpus", encoding="utf-8")
    Indexer(store, fake).index("t", load_corpus(corpus))
    (tmp_path / "received").mkdir()
    return UIContext(
        store=store,
        retriever_for=lambda name: Retriever(store.open(name), fake),
        run_index=Indexer(store, fake).run,
        upload_root=tmp_path / "uploads",
        received_root=tmp_path / "received",
    )


def texts(ctx: UIContext) -> dict[str, str]:
    table = ctx.store.open("t")
    ids = sorted(c for group in table.chunk_ids_by_doc().values() for c in group)
    return {c.doc_id: c.text for c in table.get(ids)}


def test_an_upload_never_replaces_a_document_from_elsewhere(ctx: UIContext, tmp_path: Path) -> None:
    received = tmp_path / "received"
    (received / "notes.txt").write_text("an uploaded file with the same name", encoding="utf-8")
    (received / "lines.jsonl").write_text(json.dumps({"id": "notes.txt", "text": "a line with that id"}) + "\n")
    report = callbacks.upload(ctx, "t", [str(received / "notes.txt"), str(received / "lines.jsonl")])
    assert report.startswith("**Indexed into t:** 2 documents, 2 chunks added")
    stored = texts(ctx)
    assert stored["notes.txt"] == "the original notes indexed from the corpus"
    (upload,) = [k for k in stored if k.startswith("upload:notes.") and k.endswith(".txt")]
    (line,) = [k for k in stored if k.startswith("upload:lines.") and k.endswith(".jsonl#notes.txt")]
    assert (stored[upload], stored[line]) == ("an uploaded file with the same name", "a line with that id")


def test_names_that_sanitise_alike_are_both_kept(ctx: UIContext, tmp_path: Path) -> None:
    first, second = tmp_path / "received" / "a b.md", tmp_path / "received" / "sub" / "a?b.md"
    second.parent.mkdir()
    first.write_text("# One\n\nthe first file", encoding="utf-8")
    second.write_text("# Two\n\nthe second file", encoding="utf-8")
    callbacks.upload(ctx, "t", [str(first), str(second)])
    kept = sorted(p.name for p in (tmp_path / "uploads" / "t").iterdir())
    assert len(kept) == 2 and all(name.startswith("a_b.") and name.endswith(".md") for name in kept)
    uploaded = sorted(v.split("\n")[-1] for k, v in texts(ctx).items() if k.startswith("upload:a_b."))
    assert uploaded == ["the first file", "the second file"]
    again = callbacks.upload(ctx, "t", [str(first)])  # the same bytes again: the same document, unchanged
    assert again.startswith("**Indexed into t:** 1 documents, 0 chunks added, 1 unchanged")


def test_only_files_the_server_received(ctx: UIContext, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("a server file the client named", encoding="utf-8")
    escape = tmp_path / "received" / "link.txt"
    escape.symlink_to(outside)
    report = callbacks.upload(ctx, "t", [str(outside), str(escape), f"{tmp_path}/received/../secret.txt"])
    assert report.count("not a file uploaded to this server; refused") == 3
    assert not any("server file" in text for text in texts(ctx).values())


def test_uploads_go_only_to_existing_indexes(ctx: UIContext, tmp_path: Path) -> None:
    (tmp_path / "received" / "a.txt").write_text("text", encoding="utf-8")
    for name in ("new-index", "../../etc", "<b>x</b>"):
        report = callbacks.upload(ctx, name, [str(tmp_path / "received" / "a.txt")])
        assert report.startswith("There is no index ") and "<b>" not in report
    assert ctx.store.list_indexes() == ["t"] and not (tmp_path / "uploads").exists()


def test_cli_documents_cannot_take_upload_ids(ctx: UIContext) -> None:
    report = Indexer(ctx.store, WordLengthEmbedder()).index("t", [Document("upload:x.txt", "sneaky", "/s")])
    (failure,) = report.failures
    assert failure.reason.startswith("document ids starting with 'upload:' are reserved for files uploaded")


def test_markdown_and_html_from_data_are_escaped(ctx: UIContext, tmp_path: Path) -> None:
    hostile = tmp_path / "received" / "[x](javascript:alert(1)) <img src=x onerror=alert(1)>.exe"
    hostile.write_bytes(b"MZ")
    report = callbacks.upload(ctx, "t", [str(hostile)])
    assert "<img" not in report and "](javascript" not in report
    assert "\\[x\\]\\(javascript:alert\\(1\\)\\) &lt;img src=x onerror=alert\\(1\\)&gt;.exe: type not" in report
    assert md("| a | b |\n# h") == "\\| a \\| b \\| \\# h"


def test_highlighting_never_splits_an_entity() -> None:
    for term in ("amp", "quot", "lt", "gt", "x27", "39"):
        marked = highlight('Tom & Jerry say "hi" <b> it\'s 39', [term])
        assert (
            marked.replace("<mark>", "").replace("</mark>", "")
            == "Tom &amp; Jerry say &quot;hi&quot; &lt;b&gt; it&#x27;s 39"
        )
    assert highlight("lt and &lt;", ["lt"]) == "<mark>lt</mark> and &amp;<mark>lt</mark>;"
