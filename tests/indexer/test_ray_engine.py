"""The Ray Data engine against the single-process indexer, on a local Ray cluster this module starts
(ray.init(num_cpus=2)), with the bundled MiniLM and the NV-Embed fixture and real LanceDB.

Each Ray run is compared with a single-process run of the same corpus: the same report, the same chunk ids
and rows, vectors within float tolerance.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nvrag.embedder import LoadOptions, load_embedder
from nvrag.embedder.minilm import MINILM_NAME
from nvrag.embedder.nvembed import NVEMBED_NAME
from nvrag.embedder.registry import ModelRecipe
from nvrag.errors import CheckpointError, ConfigError
from nvrag.indexer import Indexer, IndexReport, IndexRequest, PathSource, Progress, RayOptions, StopFlag, load_corpus
from nvrag.indexer.ray_engine import RayEngine
from nvrag.schema import ChunkerSettings
from nvrag.store import LanceStore, Table
from tests.conftest import NVEMBED_TINY

ray = pytest.importorskip("ray", reason="the 'ray' extra is part of the dev install")
pytestmark = pytest.mark.slow

CHUNKER = ChunkerSettings(chunk_tokens=40, overlap_tokens=8)
OPTIONS = RayOptions(workers=2, jsonl_block_lines=7)  # 2 CPU actors; the JSONL file loads in 5 parallel blocks


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_corpus(root: Path) -> Path:
    """A directory with every kind of input the engines must agree on, failures and duplicates included."""
    corpus = root / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "guide.md").write_text(
        "---\ntitle: The guide\ntags: demo\n---\n# Guide\n\n"
        + "\n\n".join(
            f"Paragraph {i} explains how the indexer reads files and splits them into chunks." for i in range(8)
        ),
        encoding="utf-8",
    )
    (corpus / "notes.txt").write_text("Short notes about retrieval with dense vectors and BM25.", encoding="utf-8")
    (corpus / "sub" / "page.html").write_text(
        "<html><head><title>Page</title><script>x()</script></head><body><nav>menu</nav>"
        "<main><h1>Page</h1><p>HTML main text about vector search and cosine similarity.</p></main></body></html>",
        encoding="utf-8",
    )
    lines = [
        json.dumps({"id": f"j{i}", "text": f"JSON line document number {i} on topic {i % 4}.", "k": i})
        for i in range(30)
    ]
    lines[5] = "{not json"
    lines[11] = json.dumps({"id": "j3", "text": "a second document with the id j3"})  # duplicate id
    lines[17] = json.dumps({"id": "j17", "text": "   "})  # no text
    (corpus / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    (corpus / "blob.txt").write_bytes(b"\x00\x01binary\x00" * 20)
    return corpus


def minilm_recipe() -> ModelRecipe:
    return ModelRecipe(MINILM_NAME, LoadOptions())


def single(
    store: LanceStore,
    name: str,
    corpus: Path,
    recipe: ModelRecipe,
    chunker: ChunkerSettings = CHUNKER,
    *,
    prune: bool = False,
    reembed: bool = False,
    exclude: tuple[Path, ...] = (),
) -> IndexReport:
    indexer = Indexer(store, load_embedder(recipe.name, recipe.options), chunker=chunker, batch_chunks=16)
    return indexer.index(name, load_corpus(corpus, exclude=exclude), prune=prune, reembed=reembed)


def on_ray(
    store: LanceStore,
    name: str,
    corpus: Path,
    recipe: ModelRecipe,
    *,
    stop: StopFlag | None = None,
    batch: int = 16,
    chunker: ChunkerSettings = CHUNKER,
    prune: bool = False,
    reembed: bool = False,
) -> IndexReport:
    request = IndexRequest(
        name,
        PathSource(corpus),
        chunker=chunker,
        batch_size=batch,
        prune=prune,
        reembed=reembed,
        engine="ray",
        ray=OPTIONS,
    )
    progress = None
    if stop is not None:

        def stop_after_first_commit(p: Progress) -> None:
            stop.set()

        progress = stop_after_first_commit
    return RayEngine(store, load_embedder(recipe.name, recipe.options), recipe).run(request, progress, stop)


def same_result(a: IndexReport, b: IndexReport) -> None:
    assert {**a.to_dict(), "index": ""} == {**b.to_dict(), "index": ""}


def same_index(a: Table, b: Table, atol: float = 1e-5) -> None:
    ids_a, ids_b = a.chunk_ids_by_doc(), b.chunk_ids_by_doc()
    assert ids_a == ids_b
    every = sorted(set().union(*ids_a.values()))
    assert a.count() == b.count() == len(every)  # no duplicate rows
    assert a.get(every) == b.get(every)  # text, spans, titles, metadata
    va, vb = a.vectors(every), b.vectors(every)
    worst = max(float(np.abs(va[i] - vb[i]).max()) for i in every)
    assert worst <= atol, worst


def test_ray_indexes_a_mixed_corpus_exactly_like_the_single_process_indexer(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    data = corpus / ".nvrag"  # the data directory inside the folder: a run of PATH never reads it
    store = LanceStore(str(data))
    expected = single(store, "one", corpus, minilm_recipe(), exclude=(data,))
    got = on_ray(store, "ray", corpus, minilm_recipe())
    same_result(got, expected)
    assert got.documents == 30  # guide, notes, page and 27 JSONL documents
    reasons = sorted((Path(f.source).name, f.reason.split(";")[0]) for f in got.failures)
    assert reasons == [
        ("blob.txt", "looks binary (NUL bytes)"),
        ("docs.jsonl:12", "duplicate document id 'j3'"),
        ("docs.jsonl:18", "document j17: missing or empty 'text'"),
        ("docs.jsonl:6", "malformed JSON (Expecting property name enclosed in double quotes)"),
        ("empty.txt", "empty file"),
    ]
    same_index(store.open("ray"), store.open("one"))
    assert store.open("ray").manifest.chunker == CHUNKER

    again = on_ray(store, "ray", corpus, minilm_recipe())  # nothing new: nothing embedded
    assert (again.chunks_added, again.chunks_unchanged, again.chunks_removed) == (0, got.chunks_added, 0)


def test_a_stopped_ray_run_resumes_with_no_duplicate_and_no_missing_chunk(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    store = LanceStore(str(tmp_path / "db"))
    expected = single(store, "one", corpus, minilm_recipe())
    stop = StopFlag()
    first = on_ray(store, "ray", corpus, minilm_recipe(), stop=stop, batch=8)
    assert first.interrupted and 0 < first.chunks_added < expected.chunks_added
    assert store.open("ray").count() == first.chunks_added  # every committed batch, nothing else
    rest = on_ray(store, "ray", corpus, minilm_recipe(), batch=8)
    assert not rest.interrupted
    assert (rest.chunks_added, rest.chunks_unchanged) == (
        expected.chunks_added - first.chunks_added,
        first.chunks_added,
    )
    same_index(store.open("ray"), store.open("one"))


def test_changes_prune_and_reembed_follow_the_single_process_semantics(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    store = LanceStore(str(tmp_path / "db"))
    single(store, "one", corpus, minilm_recipe())
    on_ray(store, "ray", corpus, minilm_recipe())
    (corpus / "notes.txt").write_text("Rewritten notes: hybrid search fuses BM25 and dense ranks.", encoding="utf-8")
    (corpus / "sub" / "page.html").unlink()
    expected = single(store, "one", corpus, minilm_recipe(), prune=True)
    got = on_ray(store, "ray", corpus, minilm_recipe(), prune=True)
    same_result(got, expected)
    assert (got.chunks_added, got.chunks_removed, got.documents_removed) == (1, 2, 1)
    same_index(store.open("ray"), store.open("one"))

    wider = ChunkerSettings(chunk_tokens=60, overlap_tokens=12)  # a new chunker: a rebuild beside the index
    expected = single(store, "one", corpus, minilm_recipe(), chunker=wider, reembed=True)
    got = on_ray(store, "ray", corpus, minilm_recipe(), chunker=wider, reembed=True)
    same_result(got, expected)
    assert got.reembedded and store.open("ray").manifest.chunker == wider
    assert store.open_staging("ray") is None
    same_index(store.open("ray"), store.open("one"))


def test_ray_options_fill_in_defaults_from_the_cluster_and_refuse_what_it_cannot_give() -> None:
    assert RayOptions().resolved(16, 0) == RayOptions(workers=1, gpus_per_worker=0.0)
    assert RayOptions().resolved(64, 8) == RayOptions(workers=8, gpus_per_worker=1.0)
    assert RayOptions(gpus_per_worker=0.5).resolved(64, 8).workers == 16
    with pytest.raises(ConfigError, match=r"--gpus-per-worker 1: the Ray cluster has 0 GPUs"):
        RayOptions(gpus_per_worker=1).resolved(16, 0)
    with pytest.raises(ConfigError, match=r"4 workers x 1 CPUs need 4 CPUs; the Ray cluster has 2"):
        RayOptions(workers=4).resolved(2, 0)
    with pytest.raises(ConfigError, match=r"3 workers x 1 GPUs need 3 GPUs; the Ray cluster has 2"):
        RayOptions(workers=3, gpus_per_worker=1).resolved(8, 2)


def test_the_nvembed_fixture_on_ray_matches_the_single_process_indexer(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    for name in ("docs.jsonl", "blob.txt", "empty.txt"):
        (corpus / name).unlink()
    recipe = ModelRecipe(NVEMBED_NAME, LoadOptions(model_path=NVEMBED_TINY))
    store = LanceStore(str(tmp_path / "db"))
    expected = single(store, "one", corpus, recipe)
    got = on_ray(store, "ray", corpus, recipe)
    same_result(got, expected)
    assert store.open("ray").manifest.model == NVEMBED_NAME
    same_index(store.open("ray"), store.open("one"))


def test_an_error_in_a_worker_reaches_the_caller_as_the_domain_error(tmp_path: Path) -> None:
    """The driver never loads the weights; the actors do, and a broken checkpoint fails there."""
    broken = tmp_path / "broken"
    shutil.copytree(NVEMBED_TINY, broken)
    (broken / "model-00002-of-00002.safetensors").unlink()
    corpus = make_corpus(tmp_path)
    recipe = ModelRecipe(NVEMBED_NAME, LoadOptions(model_path=broken))
    store = LanceStore(str(tmp_path / "db"))
    with pytest.raises(CheckpointError, match=r"shard files listed in model.safetensors.index.json are missing"):
        on_ray(store, "ray", corpus, recipe)
    assert store.open("ray").count() == 0


def test_every_version_a_ray_run_commits_holds_each_document_wholly_old_or_wholly_new(tmp_path: Path) -> None:
    """Batches of 2 chunks cut across documents of 3-4 chunks; each commit still holds whole documents, with
    their old chunks removed in the same transaction (#27 item 9): no Lance version a reader (or a crash) can
    stop at shows a document half rewritten, or its old and new chunks at once."""
    import lance

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = [
        "retrieval",
        "ranks",
        "passages",
        "by",
        "cosine",
        "similarity",
        "of",
        "their",
        "embeddings",
        "to",
        "the",
        "query",
        "vector",
    ]

    def write(version: str) -> None:
        lines = [
            json.dumps({"id": f"d{i}", "text": " ".join(f"{version}{w}" for w in words * (6 + i % 3))})
            for i in range(6)
        ]
        (corpus / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    store = LanceStore(str(tmp_path / "db"))
    write("old")
    on_ray(store, "ray", corpus, minilm_recipe(), batch=2)
    old = store.open("ray").chunk_ids_by_doc()
    assert all(len(ids) >= 3 for ids in old.values())
    first = lance.dataset(store.open("ray").uri).version
    write("new")
    got = on_ray(store, "ray", corpus, minilm_recipe(), batch=2)
    new = store.open("ray").chunk_ids_by_doc()
    assert got.chunks_removed == sum(len(ids) for ids in old.values()) and not set().union(*old.values()) & set().union(
        *new.values()
    )
    uri = store.open("ray").uri
    versions = range(first, lance.dataset(uri).version + 1)
    assert len(versions) > 2  # several commits
    for version in versions:
        rows = lance.dataset(uri, version=version).to_table(columns=["doc_id", "chunk_id"]).to_pylist()
        held: dict[str, set[str]] = {}
        for row in rows:
            held.setdefault(row["doc_id"], set()).add(row["chunk_id"])
        assert all(ids in (old[doc], new[doc]) for doc, ids in held.items()), version
        assert set(held) == set(old)
