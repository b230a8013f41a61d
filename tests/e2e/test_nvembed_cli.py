"""`nvrag embed`, `nvrag index` and `nvrag search` as processes, with --model-path at the NV-Embed fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import NVEMBED_TINY
from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["card_queries", "unicode_edge_passages", "trunc_query_24"])
def test_embed_reproduces_golden_cases(tmp_path: Path, golden: dict[str, Any], name: str) -> None:
    case = next(c for c in golden["cases"] if c["name"] == name)
    source = tmp_path / "in.jsonl"
    # alternate the two accepted line forms: a JSON string and an object with "text"
    lines = [json.dumps(t) if i % 2 else json.dumps({"text": t}) for i, t in enumerate(case["texts"])]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    args = ["embed", "--model-path", str(NVEMBED_TINY), "--input", str(source), "--output", str(out)]
    args += ["--max-length", str(case["max_length"]), "--dtype", "float32"]  # golden values: exact
    if case["instruction"]:
        args += ["--prefix", case["instruction"]]
    result = nvrag(*args, db=tmp_path / "db")
    assert result.returncode == 0, result.stderr
    assert "model: nvidia/NV-Embed-v2 from" in result.stderr and "(license CC-BY-NC-4.0)" in result.stderr
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (len(case["texts"]), 64)
    np.testing.assert_allclose(vectors, np.array(case["embeddings"]), atol=1e-5)


def test_embed_nan_case_is_a_clear_error(tmp_path: Path, golden: dict[str, Any]) -> None:
    (case,) = golden["nan_cases"]
    result = nvrag(
        "embed", case["texts"][0], "--model-path", str(NVEMBED_TINY), "--prefix", case["instruction"],
        "--max-length", "16", db=tmp_path / "db",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: the instruction takes 18 tokens and the max length is 16: no text token is left to embed; "
        "raise --max-length or shorten the instruction"
    )


def test_index_and_search_with_the_fixture_checkpoint(tmp_path: Path, golden: dict[str, Any]) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    passages = next(c for c in golden["cases"] if c["name"] == "card_passages")["texts"]
    for i, text in enumerate(passages):
        (corpus / f"p{i}.txt").write_text(text, encoding="utf-8")
    db = tmp_path / "db"
    model = ["--model-path", str(NVEMBED_TINY), "--dtype", "float32"]  # golden scores: exact
    built = nvrag("index", str(corpus), "--index", "tiny", *model, "--json", db=db)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["chunks_added"] == 2

    found = nvrag("search", "are judo throws allowed in wrestling?", "--index", "tiny", *model, "--json", db=db)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    # the card's first query against the card's passages: the golden score matrix's first row, / 100
    assert [h["doc_id"] for h in hits] == ["p0.txt", "p1.txt"]
    assert [h["score"] for h in hits] == pytest.approx([s / 100 for s in golden["card_scores"][0]], abs=1e-5)
    info = json.loads(nvrag("info", "--json", db=db).stdout)
    manifest = info["indexes"][0]["manifest"]
    assert (manifest["model"], manifest["dimension"], manifest["license"]) == ("nvidia/NV-Embed-v2", 64, "CC-BY-NC-4.0")
    assert manifest["query_template"] == "Instruct: {instruction}\nQuery: "
    assert manifest["compute_dtype"] == "float32"  # what it was built in, recorded

    # Another checkpoint of the same family is another vector space: refused, naming both revisions.
    other = tmp_path / "other"
    shutil.copytree(NVEMBED_TINY, other)
    shard = other / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"  # the last float32 of the shard becomes 1.0
    shard.write_bytes(bytes(data))
    refused = nvrag("search", "judo", "--index", "tiny", "--model-path", str(other), db=db)
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        f"error: index 'tiny' was built with nvidia/NV-Embed-v2 ({manifest['model_revision']}"
    )
