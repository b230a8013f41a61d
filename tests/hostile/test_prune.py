"""--prune removes only documents that are gone from PATH: one that failed to read this run is kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer, load_corpus
from nvrag.store import LanceStore


def docs(store: LanceStore) -> list[str]:
    return sorted(store.open("t").chunk_ids_by_doc())


def test_prune_keeps_documents_that_failed_to_read(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    for name in ("kept.txt", "broken.txt", "gone.txt", "sub/inner.md"):
        (corpus / name).write_text(f"text of {name}", encoding="utf-8")
    lines = corpus / "lines.jsonl"
    lines.write_text(
        json.dumps({"id": "l1", "text": "line one"}) + "\n" + json.dumps({"id": "l2", "text": "line two"}) + "\n",
        encoding="utf-8",
    )
    store = LanceStore(str(tmp_path / "db"))
    indexer = Indexer(store, WordLengthEmbedder())
    indexer.index("t", load_corpus(corpus))
    assert docs(store) == ["broken.txt", "gone.txt", "kept.txt", "l1", "l2", "sub/inner.md"]

    (corpus / "gone.txt").unlink()  # really gone: pruned
    (corpus / "broken.txt").unlink()
    os.mkfifo(corpus / "broken.txt")  # still in PATH, unreadable this run: kept
    lines.write_text(json.dumps({"id": "l1", "text": "line one"}) + "\n" + "{not json\n", encoding="utf-8")
    (corpus / "sub" / "inner.md").write_bytes(b"\x00binary now")
    report = indexer.index("t", load_corpus(corpus), prune=True)
    assert report.documents_removed == 1
    assert sorted(Path(f.source).name for f in report.failures) == ["broken.txt", "inner.md", "lines.jsonl:2"]
    # l2's line could not be read (no id to tell which document it was): its file's documents are kept
    assert docs(store) == ["broken.txt", "kept.txt", "l1", "l2", "sub/inner.md"]

    (corpus / "broken.txt").unlink()
    lines.write_text(json.dumps({"id": "l1", "text": "line one"}) + "\n", encoding="utf-8")
    (corpus / "sub" / "inner.md").write_text("readable again", encoding="utf-8")
    report = indexer.index("t", load_corpus(corpus), prune=True)
    assert (report.failed, report.documents_removed) == (0, 2)
    assert docs(store) == ["kept.txt", "l1", "sub/inner.md"]
