"""`evaluate` on a tiny BEIR dataset with the fake embedder: exact metrics, the MTEB rules, bad datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError, DatasetError
from nvrag.evaluation import evaluate, load_dataset
from nvrag.store import LanceStore
from tests.reranker.fakes import ShortestFirst


def write_dataset(folder: Path, qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = [
        {"_id": "d1", "title": "", "text": "aaaa"},  # e3
        {"_id": "d2", "title": "", "text": "bb"},  # e1
        {"_id": "d3", "title": "", "text": "ccc"},  # e2
        {"_id": "q2", "title": "", "text": "yy q"},  # e1 + e0: exactly query q2's vector
    ]
    queries = [{"_id": "q1", "text": "xxxx"}, {"_id": "q2", "text": "yy"}, {"_id": "q9", "text": "unjudged"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return folder


def test_exact_metrics_and_the_self_exclusion_rule(tmp_path: Path, store: LanceStore, fake: WordLengthEmbedder) -> None:
    # instruction "q": query q1 "q: xxxx" -> e0 + e3, nearest d1; q2 "q: yy" -> e0 + e1, identical to the
    # document whose id is "q2" (excluded: same id), then d2
    result = evaluate(write_dataset(tmp_path / "tiny"), store, fake, instruction="q")
    assert result.metrics == {"nDCG@10": 1.0, "MAP@100": 1.0, "Recall@100": 1.0, "MRR@10": 1.0}
    assert result.queries == 2 and set(result.per_query) == {"q1", "q2"}
    assert result.skipped == ["1 queries have no judgements in the test split and were not run"]
    assert (result.index, result.indexing.chunks_added) == ("eval-tiny-nvrag-fake-wordlen-doc", 4)
    again = evaluate(tmp_path / "tiny", store, fake, instruction="q")
    assert (again.indexing.chunks_added, again.indexing.chunks_unchanged) == (0, 4)
    assert again.metrics == result.metrics


def test_chunked_and_other_modes_run(tmp_path: Path, store: LanceStore, fake: WordLengthEmbedder) -> None:
    folder = write_dataset(tmp_path / "tiny")
    chunked = evaluate(folder, store, fake, instruction="q", chunked=True)
    assert chunked.index == "eval-tiny-nvrag-fake-wordlen-chunked" and chunked.metrics["nDCG@10"] == 1.0
    bm25 = evaluate(folder, store, fake, mode="bm25")
    assert bm25.metrics["Recall@100"] == 0.0  # no query shares a word with its relevant document
    hybrid = evaluate(folder, store, fake, instruction="q", mode="hybrid")
    assert hybrid.metrics["nDCG@10"] == 1.0
    assert json.loads(json.dumps(hybrid.to_json()))["metrics"] == hybrid.metrics


def test_ids_not_in_the_corpus_count_against_recall(
    tmp_path: Path, store: LanceStore, fake: WordLengthEmbedder
) -> None:
    folder = write_dataset(tmp_path / "tiny", "q1\td1\t1\nq1\tgone\t1\nq2\td2\t1\n")
    result = evaluate(folder, store, fake, instruction="q")
    assert result.per_query["q1"]["Recall@100"] == 0.5


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: (f / "qrels" / "test.tsv").unlink(), r"no qrels/test\.tsv \(splits present: none\)"),
        (lambda f: (f / "queries.jsonl").unlink(), r"no queries\.jsonl"),
        (lambda f: (f / "qrels" / "test.tsv").write_text("q1 d1 1\n"), r"test\.tsv:1: expected 'query-id<TAB>"),
        (lambda f: (f / "qrels" / "test.tsv").write_text("q1\td1\thigh\n"), r"test\.tsv:1: score 'high' is not"),
        (lambda f: (f / "queries.jsonl").write_text('{"_id": "q1"}\n'), r"queries\.jsonl:1: expected a JSON object"),
        (lambda f: (f / "qrels" / "test.tsv").write_text("zz\td1\t1\n"), r"no judged query is in queries\.jsonl"),
    ],
)
def test_bad_datasets_are_named(tmp_path: Path, breakage: object, message: str) -> None:
    folder = write_dataset(tmp_path / "bad")
    breakage(folder)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=message):
        load_dataset(folder)


def test_judged_queries_missing_from_queries_are_skipped(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "tiny", "q1\td1\t1\nghost\td1\t1\n")
    data = load_dataset(folder)
    assert list(data.queries) == ["q1"]
    assert data.skipped[0] == "1 judged queries are not in queries.jsonl and were skipped (e.g. ghost)"


def test_other_splits_are_listed(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "tiny")
    with pytest.raises(DatasetError, match=r"no qrels/dev\.tsv \(splits present: test\); choose one with --split"):
        load_dataset(folder, "dev")


def test_an_index_of_another_compute_dtype_is_not_reused(
    tmp_path: Path, store: LanceStore, fake: WordLengthEmbedder
) -> None:
    """An evaluation in bfloat16 gets its own index; one named explicitly but built in another dtype is refused
    with one line, rather than reporting that dtype's figures as this one's."""
    import dataclasses

    folder = write_dataset(tmp_path / "tiny")
    exact = evaluate(folder, store, fake, instruction="q")
    half = WordLengthEmbedder()
    half.info = dataclasses.replace(half.info, compute_dtype="bfloat16")
    other = evaluate(folder, store, half, instruction="q")
    assert (exact.index, other.index) == (
        "eval-tiny-nvrag-fake-wordlen-doc",
        "eval-tiny-nvrag-fake-wordlen-doc-bfloat16",
    )
    with pytest.raises(ConfigError, match="built computing in float32, and this evaluation computes in bfloat16"):
        evaluate(folder, store, half, instruction="q", index=exact.index)


def test_a_reranked_run_is_scored_beside_the_retrieval_run(
    tmp_path: Path, store: LanceStore, fake: WordLengthEmbedder
) -> None:
    folder = write_dataset(tmp_path / "tiny")
    # shortest passage first: q1's first four documents become bb, ccc, then aaaa and "yy q" (4 characters each,
    # tied: retrieval order, aaaa first), so its relevant d1 is third (nDCG 1/log2(4) = 0.5, MRR 1/3); q2's
    # relevant "bb" is the shortest (1.0)
    result = evaluate(folder, store, fake, instruction="q", reranker=ShortestFirst(), rerank_depth=4)
    assert result.metrics["nDCG@10"] == 1.0  # the retrieval run is unchanged
    assert result.reranked is not None
    assert result.reranked.metrics["nDCG@10"] == pytest.approx(0.75)
    assert result.reranked.metrics["MRR@10"] == pytest.approx((1 / 3 + 1) / 2)
    assert result.reranked.metrics["Recall@100"] == 1.0  # reranking reorders, never drops
    assert json.loads(json.dumps(result.to_json()))["reranked"]["depth"] == 4
    shallow = evaluate(folder, store, fake, instruction="q", reranker=ShortestFirst(), rerank_depth=1)
    assert shallow.reranked is not None and shallow.reranked.metrics == shallow.metrics  # one document: no change
    with pytest.raises(ConfigError, match="rerank depth must be between 1 and 100"):
        evaluate(folder, store, fake, reranker=ShortestFirst(), rerank_depth=101)
