"""The UI's callbacks as plain functions, on real LanceDB with the fake embedder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer
from nvrag.retriever import Retriever
from nvrag.schema import Document
from nvrag.store import LanceStore
from nvrag.ui import callbacks
from nvrag.ui.callbacks import CUSTOM_TASK, DEFAULT_TASK, UIContext
from nvrag.ui.render import highlight, query_terms


@pytest.fixture
def ctx(tmp_path: Path) -> UIContext:
    store = LanceStore(str(tmp_path / "db"))
    fake = WordLengthEmbedder()
    docs = [
        Document("A", "apple <b>banana</b> pie", "/tmp/a.txt", title="Fruit", metadata={"lang": "en"}),
        Document("B", "cherry tart", "/tmp/b.txt", metadata={"lang": "de"}),
    ]
    Indexer(store, fake).index("t", docs)
    Indexer(store, fake).index("empty", [])
    return UIContext(
        store=store,
        retriever_for=lambda name: Retriever(store.open(name), fake),
        run_index=Indexer(store, fake).run,
        upload_root=tmp_path / "uploads",
        max_upload_bytes=1000,
    )


def search(ctx: UIContext, query: str, **kw: object) -> str:
    args = {"index": "t", "task": CUSTOM_TASK, "instruction": "q", "k": 10, "mode": "dense", "filters": ""} | kw
    return callbacks.search(
        ctx, args["index"], query, args["task"], args["instruction"], args["k"], args["mode"], args["filters"]
    )  # type: ignore[arg-type]


def test_results_are_cards_with_escaped_highlighted_text(ctx: UIContext) -> None:
    page = search(ctx, "banana")
    assert page.count('data-testid="hit"') == 2
    assert "<b>" not in page and "&lt;b&gt;<mark>banana</mark>&lt;/b&gt;" in page
    assert '<div class="nvrag-title">Fruit</div>' in page
    assert 'href="/source/t/' in page


def test_messages_instead_of_errors(ctx: UIContext) -> None:
    assert "Type a query" in search(ctx, "   ")
    assert "Choose an index (available: empty, t)" in search(ctx, "x", index="nope")
    assert "Index 'empty' is empty" in search(ctx, "x", index="empty")
    bad = search(ctx, "x", filters="lang ==")
    assert 'data-testid="error"' in bad and "Bad filter: cannot read the filter condition" in bad
    assert "No results. Nothing matched the filter." in search(ctx, "x", filters="lang = fr")
    assert "limit is 10000" in search(ctx, "x" * 10_001)
    assert "unknown task" in search(ctx, "x", task="Nope")


def test_filters_modes_tasks_and_k_bounds(ctx: UIContext) -> None:
    assert 'data-doc-id="B"' in search(ctx, "x", filters="lang = de") and 'data-doc-id="A"' not in search(
        ctx, "x", filters="lang = de"
    )
    hybrid = search(ctx, "cherry", mode="hybrid")
    assert "(dense #" in hybrid and "BM25 #1" in hybrid
    assert search(ctx, "x", k=500).count('data-testid="hit"') == 2  # clamped to 50, two chunks exist
    assert search(ctx, "x", task=DEFAULT_TASK).count('data-testid="hit"') == 2
    assert search(ctx, "x", task="SciFact").count('data-testid="hit"') == 2


def test_index_info_shows_the_manifest(ctx: UIContext) -> None:
    info = callbacks.index_info(ctx, "t")
    for expected in (
        "| model | nvrag/fake-wordlen |",
        "| license | MIT |",
        "| dimension | 8 |",
        "| computed in | float32 |",
        "| stored as | float32 |",
        "| rows (chunks) | 2 |",
        "| field | value |\n| --- | --- |",  # a header row with names, not a blank one
    ):
        assert expected in info
    assert "No index selected" in callbacks.index_info(ctx, None)


def test_upload_sanitises_names_checks_types_and_sizes_then_indexes(ctx: UIContext, tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    good = incoming / "..__notes file.txt"
    good.write_text("zebra crossing", encoding="utf-8")
    big = incoming / "big.md"
    big.write_text("x " * 600, encoding="utf-8")
    exe = incoming / "run.exe"
    exe.write_bytes(b"MZ")
    empty = incoming / "empty.txt"
    empty.write_text("", encoding="utf-8")
    report = callbacks.upload(ctx, "t", [str(good), str(big), str(exe), str(empty)])
    assert report.startswith("**Indexed into t:** 1 documents, 1 chunks added")
    assert "- big.md: 1 KB is over the 1000 bytes limit" in report and "- run.exe: type not accepted" in report
    assert "- empty.e3b0c44298fc.txt: empty file; skipped" in report
    digest = hashlib.sha256(b"zebra crossing").hexdigest()[:12]
    stored = f"notes_file.{digest}.txt"
    assert sorted(p.name for p in (tmp_path / "uploads" / "t").iterdir()) == ["empty.e3b0c44298fc.txt", stored]
    assert f'data-doc-id="upload:{stored}"' in search(ctx, "zebra", mode="bm25")


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\\\win.ini", "win.ini"),
        (".hidden", "hidden"),
        ("a b?.md", "a_b_.md"),
        ("..", "upload"),
    ],
)
def test_safe_names(name: str, safe: str) -> None:
    assert callbacks.safe_name(name) == safe


def test_highlighting_helpers() -> None:
    assert query_terms("How to hash a FILE? file hash") == ["hash", "file"]
    assert highlight("<i>Hash</i> files", ["hash"]) == "&lt;i&gt;<mark>Hash</mark>&lt;/i&gt; files"


def test_one_card_per_document_with_its_other_passages(tmp_path: Path) -> None:
    from nvrag.schema import ChunkerSettings

    store = LanceStore(str(tmp_path / "db"))
    fake = WordLengthEmbedder()
    docs = [Document("long", "aa bb cc dd ee ff", "/tmp/l.txt"), Document("short", "gg", "/tmp/s.txt")]
    Indexer(store, fake, chunker=ChunkerSettings(chunk_tokens=2, overlap_tokens=0)).index("g", docs)
    ctx = UIContext(
        store=store,
        retriever_for=lambda name: Retriever(store.open(name), fake),
        run_index=Indexer(store, fake).run,
        upload_root=tmp_path / "uploads",
    )
    page = search(ctx, "aa", index="g")
    assert page.count('data-testid="hit"') == 2  # two documents, four chunks
    assert page.count('data-doc-id="long"') == 1 and "2 more from this document" in page
    assert search(ctx, "aa", index="g", k=1).count('data-testid="hit"') == 1
    hybrid = search(ctx, "aa", index="g", mode="hybrid")
    assert "nvrag-bar" not in hybrid and "fused #1 (dense #" in hybrid  # RRF as ranks, not a bar against 1.0


def test_the_filter_box_lists_the_fields_of_the_index(ctx: UIContext) -> None:
    assert callbacks.filter_fields(ctx, "t") == "Fields: doc_id, source, title, chunk_no; metadata: lang"
    assert callbacks.filter_fields(ctx, "empty").endswith("this index has no metadata keys")
    assert (
        callbacks.filter_fields(ctx, None)
        == "Fields: doc_id, source, title, chunk_no, and the documents' metadata keys"
    )


def test_the_rerank_toggle_reorders_by_the_reranker_and_shows_both_ranks(ctx: UIContext) -> None:
    from dataclasses import replace

    from tests.reranker.fakes import SharedWords

    # "q: cherry xxxxx": word lengths 2, 6, 5, closer to A's histogram than to B's; B shares "cherry" with the
    # query and A no word, so the reranker puts B first
    plain = search(ctx, "cherry xxxxx")
    assert plain.index('data-doc-id="A"') < plain.index('data-doc-id="B"')
    ranked = callbacks.search(replace(ctx, reranker=SharedWords()), "t", "cherry xxxxx", CUSTOM_TASK, "q", 10,
                              "dense", "", True)  # fmt: skip
    assert ranked.index('data-doc-id="B"') < ranked.index('data-doc-id="A"')
    assert "rerank 1.000 (was #2)" in ranked and "rerank 0.000 (was #1)" in ranked
    refused = callbacks.search(ctx, "t", "x", CUSTOM_TASK, "q", 10, "dense", "", True)
    assert 'data-testid="error"' in refused and "no reranker" in refused
