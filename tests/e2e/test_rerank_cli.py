"""`nvrag rerank` as the checks call it: the real CLI reproduces the shared fixtures' goldens (every input
scored, index = input position, sorted by score), with --instruction, --top-n, the table and one-line errors."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_family_cli import FAMILY, golden, nvrag

pytestmark = pytest.mark.slow
STYLES = ("qwen3-reranker", "bert-cross-encoder")


def groups(style: str) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """The golden cases by (query, instruction): one CLI call scores each group."""
    found: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for case in golden(style)["cases"]:
        found[(case["query"], case.get("instruction"))].append(case)
    return found


def rerank(tmp: Path, style: str, query: str, documents: list[Any], *flags: str) -> dict[str, Any]:
    source = tmp / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
    done = nvrag(
        "rerank", query, "--model-path", str(FAMILY / style), "--input", str(source),
        "--max-length", str(golden(style)["max_length"]), "--dtype", "float32", "--json", *flags, db=tmp / "db",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


@pytest.mark.parametrize("style", STYLES)
def test_the_cli_reproduces_the_goldens_sorted_by_score(tmp_path: Path, style: str) -> None:
    (query, instruction), cases = max(groups(style).items(), key=lambda item: len(item[1]))
    assert len(cases) >= 3
    flags = ("--instruction", instruction) if instruction is not None else ()
    body = rerank(tmp_path, style, query, [c["document"] for c in cases], *flags)
    assert body["model"] == f"local:{'qwen3-reranker' if style == 'qwen3-reranker' else 'cross-encoder'}/{style}"
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(cases)))  # every input, once
    for result in results:
        assert result["relevance_score"] == pytest.approx(cases[result["index"]]["score"], abs=1e-5)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_instruction_truncation_and_objects_with_text(tmp_path: Path) -> None:
    cases = [c for c in golden("qwen3-reranker")["cases"] if c["name"] in ("example_instruction_capital",)]
    (case,) = cases
    body = rerank(tmp_path, "qwen3-reranker", case["query"], [{"text": case["document"]}], "--instruction",
                  case["instruction"])  # fmt: skip
    assert body["results"][0]["relevance_score"] == pytest.approx(case["score"], abs=1e-5)
    (long,) = [c for c in golden("bert-cross-encoder")["cases"] if c["name"] == "long_document_truncated"]
    body = rerank(tmp_path, "bert-cross-encoder", long["query"], [long["document"], "x"], "--top-n", "1")
    assert len(body["results"]) == 1
    if body["results"][0]["index"] == 0:
        assert body["results"][0]["relevance_score"] == pytest.approx(long["score"], abs=1e-5)


def test_the_table_and_one_line_errors(tmp_path: Path) -> None:
    done = nvrag("rerank", "capital?", "Beijing [bold]is[/bold]", "Gravity", "--model-path",
                 str(FAMILY / "bert-cross-encoder"), "--instruction", "x", db=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Beijing [bold]is[/bold]" in done.stdout  # data shown as given, never as markup
    assert "takes no instruction; --instruction is not used" in done.stderr
    assert "reranker: local:cross-encoder/bert-cross-encoder (cross-encoder" in done.stderr
    missing = nvrag("rerank", "q", "d", "--model-path", str(tmp_path / "nowhere"), db=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "neither a checkpoint folder nor a known reranker" in missing.stderr
    nothing = nvrag("rerank", "q", "--model-path", str(FAMILY / "bert-cross-encoder"), db=tmp_path)
    assert nothing.returncode == 2 and "nothing to rerank" in nothing.stderr
    embedder = nvrag("rerank", "q", "d", "--model-path", str(FAMILY / "qwen3-embedding"), db=tmp_path)
    assert embedder.returncode == 2 and "is not a reranker nvrag runs" in embedder.stderr
    assert len(embedder.stderr.strip().splitlines()) == 1


def test_search_rerank_orders_the_first_stage_as_nvrag_rerank_scores_it(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    texts = [
        "Beijing is the capital of China.",
        "Paris is the capital of France.",
        "Gravity pulls masses together.",
        "The Great Wall of China is long.",
        "Rome was not built in a day.",
        "Tokyo is a large city in Japan.",
    ]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    db = tmp_path / "db"
    assert nvrag("index", str(corpus), "--index", "cities", db=db).returncode == 0
    query, model = "capital of China", str(FAMILY / "bert-cross-encoder")
    first = nvrag("search", query, "--index", "cities", "-k", "5", "--json", db=db)
    assert first.returncode == 0, first.stderr
    stage = json.loads(first.stdout)
    done = nvrag("search", query, "--index", "cities", "-k", "3", "--rerank", model, "--rerank-depth", "5",
                 "--dtype", "float32", "--json", db=db)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "reranker: local:cross-encoder/bert-cross-encoder" in done.stderr
    hits = json.loads(done.stdout)
    scored = rerank(tmp_path, "bert-cross-encoder", query, [h["text"] for h in stage])
    expected = scored["results"][:3]
    assert [h["chunk_id"] for h in hits] == [stage[r["index"]]["chunk_id"] for r in expected]
    for hit, result in zip(hits, expected, strict=True):
        assert hit["rerank_score"] == pytest.approx(result["relevance_score"], abs=1e-5)
        assert hit["retrieval_rank"] == result["index"] + 1
        assert hit["score"] == pytest.approx(stage[result["index"]]["score"], abs=1e-6)
    table = nvrag("search", query, "--index", "cities", "-k", "3", "--rerank", model, "--rerank-depth", "5", db=db)
    assert table.returncode == 0 and "rerank" in table.stdout and "was" in table.stdout
    shallow = nvrag("search", query, "--index", "cities", "-k", "10", "--rerank", model, db=db)
    assert shallow.returncode == 0  # depth 50 >= k 10: fine
    wrong = nvrag("search", query, "--index", "cities", "-k", "10", "--rerank", model, "--rerank-depth", "5", db=db)
    assert wrong.returncode == 2 and "rerank depth must be between k (10)" in wrong.stderr
    alone = nvrag("search", query, "--index", "cities", "--rerank-depth", "5", db=db)
    assert alone.returncode == 2 and "apply with --rerank" in alone.stderr


def test_eval_rerank_prints_both_runs(tmp_path: Path) -> None:
    from tests.evaluation.test_evaluate import write_dataset

    folder = write_dataset(tmp_path / "tiny")
    model = str(FAMILY / "bert-cross-encoder")
    plain = nvrag("eval", str(folder), "--json", db=tmp_path / "db")
    assert plain.returncode == 0, plain.stderr
    done = nvrag("eval", str(folder), "--rerank", model, "--rerank-depth", "3", "--json", db=tmp_path / "db")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["metrics"] == json.loads(plain.stdout)["metrics"]  # the retrieval run is the same run
    assert body["reranked"]["model"] == "local:cross-encoder/bert-cross-encoder" and body["reranked"]["depth"] == 3
    assert set(body["reranked"]["metrics"]) == set(body["metrics"])
    table = nvrag("eval", str(folder), "--rerank", model, db=tmp_path / "db")
    assert table.returncode == 0 and "retrieval" in table.stdout and "reranked top 50" in table.stdout
