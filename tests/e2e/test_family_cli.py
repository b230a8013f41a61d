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


def nvrag(*args: str, db: Path, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess[str]:
    """The real CLI. ``timeout`` only guards against a hang."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NVRAG_DB=str(db), **extra)
    return subprocess.run(
        [sys.executable, "-m", "nvrag", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def golden(style: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FAMILY / style / "golden.json").read_text(encoding="utf-8"))
    return data


def embed(tmp: Path, style: str, texts: list[str], *flags: str, **env: str) -> np.ndarray:
    source, out = tmp / f"{style}.jsonl", tmp / f"{style}.npy"
    source.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    max_length = str(golden(style)["max_length"])
    done = nvrag(
        "embed", "--model-path", str(FAMILY / style), "--input", str(source), "--output", str(out),
        "--max-length", max_length, "--dtype", "float32", *flags, db=tmp / "db", **env,
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


@pytest.mark.parametrize("attention", ["eager", "varlen"])
def test_every_attention_path_through_the_cli(tmp_path: Path, attention: str) -> None:
    """NVRAG_ATTENTION reaches the decoder engine: the padding-free and the readable paths reproduce the
    goldens of a bidirectional and a causal family."""
    for style in ("gte-qwen2", "e5-mistral"):
        items = [i for c in golden(style)["cases"] if c["kind"] == "document" for i in c["items"]]
        got = embed(tmp_path, style, [i["text"] for i in items], NVRAG_ATTENTION=attention)
        np.testing.assert_allclose(got, [i["embedding"] for i in items], atol=ATOL, err_msg=f"{style} {attention}")


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


def hub_cache(root: Path, hub_id: str, style: str) -> Path:
    """A Hugging Face cache holding ``style``'s fixture as ``hub_id`` (as `huggingface-cli download` leaves it)."""
    repo = root / "hub" / ("models--" + hub_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(FAMILY / style, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("hub_id", "style"),
    [
        ("Qwen/Qwen3-Embedding-0.6B", "qwen3-embedding"),
        ("Alibaba-NLP/gte-Qwen2-1.5B-instruct", "gte-qwen2"),
        ("intfloat/e5-mistral-7b-instruct", "e5-mistral"),
        ("nvidia/llama-nemotron-embed-1b-v2", "llama-nemotron-embed"),
    ],
)
def test_a_registered_model_resolves_from_the_hub_cache_and_takes_task_presets(
    tmp_path: Path, hub_id: str, style: str
) -> None:
    """--model NAME finds the weights in the local cache; --task MSMARCO formats NV-Embed's MSMARCO instruction
    through the family's template, which is exactly each model card's web-search prompt (Llama: no
    instructions, its query prompt)."""
    home = hub_cache(tmp_path / "hf", hub_id, style)
    case = next(c for c in golden(style)["cases"] if c["name"] == "query_card_capital")
    source, out = tmp_path / "q.jsonl", tmp_path / "q.npy"
    source.write_text(json.dumps(case["items"][0]["text"]) + "\n", encoding="utf-8")
    done = nvrag(
        "embed", "--model", hub_id, "--query", "--task", "MSMARCO", "--input", str(source), "--output", str(out),
        "--max-length", str(golden(style)["max_length"]), "--dtype", "float32",
        db=tmp_path / "db", HF_HOME=str(home),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"model: {hub_id} as requested" in done.stderr
    np.testing.assert_allclose(np.load(out)[0], case["items"][0]["embedding"], atol=ATOL)
