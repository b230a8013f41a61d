"""The decoder families through the real CLI: `nvrag embed --model-path DIR` reproduces every golden case
(default prompts, --prefix, --dimensions), and an index built from a folder is searched without naming it
again, until the folder holds other weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
FAMILY = REPO.parent / "shared" / "fixtures" / "family"
STYLES = ("qwen3-embedding", "gte-qwen2", "e5-mistral", "llama-nemotron-embed")
ATOL = 1e-5


def nvrag(*args: str, db: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real CLI. ``timeout`` only guards against a hang."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NVRAG_DB=str(db))
    return subprocess.run(
        [sys.executable, "-m", "nvrag", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def golden(style: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FAMILY / style / "golden.json").read_text(encoding="utf-8"))
    return data


def embed(tmp: Path, style: str, texts: list[str], *flags: str) -> np.ndarray:
    source, out = tmp / f"{style}.jsonl", tmp / f"{style}.npy"
    source.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    max_length = str(golden(style)["max_length"])
    done = nvrag(
        "embed", "--model-path", str(FAMILY / style), "--input", str(source), "--output", str(out),
        "--max-length", max_length, "--dtype", "float32", *flags, db=tmp / "db",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return np.load(out)


@pytest.mark.parametrize("style", STYLES)
def test_embed_reproduces_every_case_with_the_default_prompts(tmp_path: Path, style: str) -> None:
    cases = golden(style)["cases"]
    for kind, flags in (("document", ()), ("query", ("--query",))):
        items = [i for c in cases if c["kind"] == kind for i in c["items"]]
        got = embed(tmp_path, style, [i["text"] for i in items], *flags)
        np.testing.assert_allclose(got, [i["embedding"] for i in items], atol=ATOL, err_msg=f"{style} {kind}")


def test_prefix_replaces_the_prompt_in_both_modes(tmp_path: Path) -> None:
    style = "llama-nemotron-embed"
    query = next(c for c in golden(style)["cases"] if c["name"] == "query_card_capital")["items"][0]
    document = next(c for c in golden(style)["cases"] if c["name"] == "document_card_capital")["items"][0]
    # a document embedded with the query prompt given raw equals the golden query of the same text, and back
    as_query = embed(tmp_path, style, [query["text"]], "--prefix", "query: ")
    np.testing.assert_allclose(as_query[0], query["embedding"], atol=ATOL)
    as_document = embed(tmp_path, style, [document["text"]], "--query", "--prefix", "passage: ")
    np.testing.assert_allclose(as_document[0], document["embedding"], atol=ATOL)
    bare = embed(tmp_path, style, [document["text"]], "--prefix", "")
    assert float(np.abs(bare[0] - np.array(document["embedding"])).max()) > 1e-3  # no prompt at all


def test_dimensions_cut_matryoshka_models_and_are_refused_for_others(tmp_path: Path) -> None:
    style = "qwen3-embedding"
    items = [i for c in golden(style)["cases"] if c["kind"] == "query" for i in c["items"]]
    got = embed(tmp_path, style, [i["text"] for i in items], "--query", "--dimensions", "8")
    np.testing.assert_allclose(got, [i["embedding_mrl8"] for i in items], atol=ATOL)
    source = tmp_path / "one.jsonl"
    source.write_text('"x"\n', encoding="utf-8")
    refused = nvrag("embed", "--model-path", str(FAMILY / "gte-qwen2"), "--input", str(source), "--dimensions", "8",
                    db=tmp_path / "db")  # fmt: skip
    assert refused.returncode == 2
    assert "--dimensions 8: gte-qwen2 is not Matryoshka-trained" in refused.stderr


def test_an_index_remembers_its_weights_folder(tmp_path: Path) -> None:
    folder, db = tmp_path / "weights", tmp_path / "db"
    shutil.copytree(FAMILY / "qwen3-embedding", folder)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(["alpha beta", "gamma delta"])),
        encoding="utf-8",
    )
    built = nvrag("index", str(docs), "--index", "q", "--model-path", str(folder), "--dimensions", "8", db=db)
    assert built.returncode == 0, built.stderr
    manifest = json.loads(nvrag("info", "--json", db=db).stdout)["indexes"][0]["manifest"]
    assert (manifest["model_path"], manifest["dimension"]) == (str(folder.resolve()), 8)
    found = nvrag("search", "alpha", "--index", "q", "--json", db=db)  # no --model-path
    assert found.returncode == 0, found.stderr
    assert {hit["doc_id"] for hit in json.loads(found.stdout)} == {"d0", "d1"}
    # the folder now holds other weights: one line says what to pass
    (folder / "config.json").write_text(
        (folder / "config.json").read_text(encoding="utf-8").replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'),
        encoding="utf-8",
    )
    refused = nvrag("search", "alpha", "--index", "q", db=db)
    assert refused.returncode != 0
    assert "now holds other weights" in refused.stderr and "pass --model-path" in refused.stderr
