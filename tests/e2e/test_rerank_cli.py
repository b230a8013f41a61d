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
