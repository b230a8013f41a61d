"""The indexing pipeline with the fake embedder and real LanceDB: incremental, pinned, batched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError, ModelMismatchError
from nvrag.indexer import Indexer, IndexRequest, LoadFailure, PathSource, Progress, StopFlag, load_corpus
from nvrag.schema import ChunkerSettings, Document
from nvrag.store import LanceStore
from nvrag.store.faiss_store import FaissStore

DOCS = [
    Document("a", "alpha beta gamma", "src/a"),
    Document("b", "delta epsilon", "src/b", title="B"),
    Document("c", "zeta eta theta iota", "src/c"),
]


def test_first_run_adds_everything_and_writes_the_manifest(store: LanceStore, fake: WordLengthEmbedder) -> None:
    report = Indexer(store, fake).index("t", DOCS)
    assert report.to_dict() == {
        "index": "t",
        "documents": 3,
        "chunks_added": 3,
        "chunks_unchanged": 0,
        "chunks_removed": 0,
        "documents_removed": 0,
        "failed": 0,
        "reembedded": False,
        "interrupted": False,
        "failures": [],
        "skipped": {},
        "not_in_path": 0,
    }
    manifest = store.open("t").manifest
    assert (manifest.model, manifest.model_revision, manifest.dimension) == ("nvrag/fake-wordlen", "1", 8)
    assert manifest.query_template == "{instruction}: " and manifest.normalized
    assert manifest.chunker == ChunkerSettings(64, 16)


def test_rerun_on_an_unchanged_corpus_embeds_nothing(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", DOCS)
    calls = len(fake.forward_calls)
    before = store.open("t").manifest.updated_at
    report = Indexer(store, fake).index("t", DOCS)
    assert (report.chunks_added, report.chunks_unchanged, report.chunks_removed) == (0, 3, 0)
    assert len(fake.forward_calls) == calls
    assert store.open("t").manifest.updated_at == before


def test_a_changed_document_replaces_its_chunks(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", DOCS)
    changed = [DOCS[0], Document("b", "delta epsilon omega", "src/b", title="B"), DOCS[2]]
    report = Indexer(store, fake).index("t", changed)
    assert (report.chunks_added, report.chunks_unchanged, report.chunks_removed) == (1, 2, 1)
    table = store.open("t")
    assert table.count() == 3
    (hit,) = [h for h in table.search(fake.embed_documents(["B\ndelta epsilon omega"])[0], 3) if h.chunk.doc_id == "b"]
    assert hit.chunk.text == "delta epsilon omega"


def test_failures_and_duplicates_are_reported_and_the_rest_is_indexed(
    store: LanceStore, fake: WordLengthEmbedder
) -> None:
    items: list[Document | LoadFailure] = [
        DOCS[0],
        LoadFailure("bad.txt", "looks binary (NUL bytes); skipped"),
        Document("a", "another alpha", "src/a2"),
        Document("p", "!!! ...", "src/p"),
    ]
    report = Indexer(store, fake).index("t", items)
    assert report.documents == 1 and report.chunks_added == 1
    assert [(f.source, f.reason) for f in report.failures] == [
        ("bad.txt", "looks binary (NUL bytes); skipped"),
        ("src/a2", "duplicate document id 'a'; skipped"),
        ("src/p", "no text to index; skipped"),
    ]


def test_writes_are_committed_in_batches(store: LanceStore, fake: WordLengthEmbedder) -> None:
    seen: list[Progress] = []
    indexer = Indexer(store, fake, batch_chunks=2, on_progress=seen.append)
    indexer.index("t", DOCS)
    assert [p.chunks_embedded for p in seen] == [2, 3]
    assert fake.forward_calls == [2, 1]


def test_another_model_is_refused_on_an_existing_index(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", DOCS)
    other = WordLengthEmbedder(dimension=16)
    with pytest.raises(ModelMismatchError, match=r"index 't' was built with nvrag/fake-wordlen \(1, 8 dims\)"):
        Indexer(store, other).index("t", DOCS)
    assert store.open("t").count() == 3


def test_other_chunker_settings_are_refused_on_an_existing_index(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake, chunker=ChunkerSettings(4, 1)).index("t", DOCS)
    with pytest.raises(
        ConfigError, match="chunked with 4 tokens and 1 overlap; this run asks for 5 tokens and 1 overlap"
    ):
        Indexer(store, fake, chunker=ChunkerSettings(5, 1)).index("t", DOCS)
    assert Indexer(store, fake).index("t", DOCS).chunks_unchanged == 3  # no settings: the index's own


def test_index_a_directory_end_to_end(tmp_path: Path, store: LanceStore, fake: WordLengthEmbedder) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "one.txt").write_text("one two three", encoding="utf-8")
    (corpus / "two.md").write_text("# Two\nfour five", encoding="utf-8")
    (corpus / "bin.txt").write_bytes(b"\x00\x00")
    report = Indexer(store, fake).index("dir", load_corpus(corpus))
    assert (report.documents, report.chunks_added, report.failed) == (2, 2, 1)
    assert store.open("dir").chunk_ids_by_doc().keys() == {"one.txt", "two.md"}


def test_prune_removes_documents_no_longer_in_the_corpus(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", DOCS)
    kept = Indexer(store, fake).index("t", DOCS[:2])
    assert (kept.chunks_removed, kept.documents_removed) == (0, 0)  # without --prune nothing disappears
    assert store.open("t").count() == 3
    pruned = Indexer(store, fake).index("t", DOCS[:2], prune=True)
    assert (pruned.chunks_removed, pruned.documents_removed, pruned.chunks_unchanged) == (1, 1, 2)
    assert set(store.open("t").chunk_ids_by_doc()) == {"a", "b"}


def test_reembed_rebuilds_beside_the_live_index_and_switches(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", DOCS)
    other = WordLengthEmbedder(dimension=16)
    report = Indexer(store, other).index("t", DOCS, reembed=True)
    assert (report.reembedded, report.chunks_added) == (True, 3)
    table = store.open("t")
    assert (table.manifest.dimension, table.count()) == (16, 3)
    assert store.list_indexes() == ["t"] and store.open_staging("t") is None
    # the old rows are gone with their table; a search runs on the new vectors
    assert len(table.search(other.embed_queries(["alpha"])[0], 3)) == 3


def test_an_interrupted_rebuild_leaves_the_live_index_and_resumes(store: LanceStore, fake: WordLengthEmbedder) -> None:
    Indexer(store, fake).index("t", DOCS)
    other = WordLengthEmbedder(dimension=16)
    stop = StopFlag()

    def interrupt(_: Progress) -> None:
        stop.set()  # as the Ctrl-C handler does, after the first committed batch

    first = Indexer(store, other, batch_chunks=1, on_progress=interrupt).index("t", DOCS, reembed=True, stop=stop)
    assert (first.interrupted, first.reembedded, first.chunks_added) == (True, False, 1)
    assert store.open("t").manifest.dimension == 8 and store.open("t").count() == 3  # live index untouched
    staging = store.open_staging("t")
    assert staging is not None and staging.count() == 1
    second = Indexer(store, other, batch_chunks=1).index("t", DOCS, reembed=True)
    assert (second.reembedded, second.chunks_added, second.chunks_unchanged) == (True, 2, 1)
    assert store.open("t").manifest.dimension == 16 and store.open("t").count() == 3


def test_stop_ends_a_run_after_the_batch_in_flight(store: LanceStore, fake: WordLengthEmbedder) -> None:
    stop = StopFlag()
    indexer = Indexer(store, fake, batch_chunks=1, on_progress=lambda _: stop.set())
    report = indexer.index("t", DOCS, stop=stop)
    assert (report.interrupted, report.chunks_added) == (True, 1)
    resumed = Indexer(store, fake).index("t", DOCS)
    assert (resumed.chunks_added, resumed.chunks_unchanged) == (2, 1)
    assert store.open("t").count() == 3


@pytest.mark.parametrize("kind", ["lancedb", "faiss"])
def test_a_data_directory_inside_the_indexed_folder_is_never_read(
    tmp_path: Path, fake: WordLengthEmbedder, kind: str
) -> None:
    folder = tmp_path / "project"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "a.txt").write_text("alpha beta gamma", encoding="utf-8")
    data = folder / ".nvrag"  # NVRAG_DB=./.nvrag nvrag index .
    (data / "uploads").mkdir(parents=True)
    (data / "uploads" / "u.md").write_text("an upload kept by the web page", encoding="utf-8")
    store = FaissStore(data) if kind == "faiss" else LanceStore(str(data))
    request = IndexRequest("t", PathSource(folder), prune=True)
    first = Indexer(store, fake).run(request)
    (data / "t.report.json").write_text(json.dumps(first.to_dict()), encoding="utf-8")  # as the CLI writes it
    again = Indexer(store, fake).run(request)
    assert (first.documents, first.chunks_added, first.skipped) == (1, 1, {})
    assert (again.documents, again.chunks_added, again.chunks_unchanged, again.skipped) == (1, 0, 1, {})
    assert set(store.open("t").chunk_ids_by_doc()) == {"notes/a.txt"}


def test_index_takes_a_folder_as_the_cli_reads_it(tmp_path: Path, fake: WordLengthEmbedder) -> None:
    """``Indexer.index(name, Path)`` is a path run: ids relative to the folder, its data directory left out, and
    prune acts on the folder's documents (``load_corpus`` items would be an items run that prune cannot use)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha beta", encoding="utf-8")
    (folder / "b.txt").write_text("gamma delta", encoding="utf-8")
    store = LanceStore(str(folder / ".nvrag"))
    first = Indexer(store, fake).index("t", folder)
    (folder / "b.txt").unlink()
    second = Indexer(store, fake).index("t", folder, prune=True)
    assert (first.documents, first.chunks_added, first.skipped) == (2, 2, {})
    assert (second.chunks_unchanged, second.documents_removed) == (1, 1)
    assert set(store.open("t").chunk_ids_by_doc()) == {"a.txt"}
    with pytest.raises(ConfigError, match="uploads"):
        Indexer(store, fake).index("t", folder, uploads=True)
