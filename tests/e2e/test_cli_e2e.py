"""The real `nvrag` command in subprocesses: demo corpus, bundled MiniLM, LanceDB in a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_CORPUS

pytestmark = pytest.mark.slow
README_QUERY = "compute a SHA-256 digest of a file"
README_TOP_HIT = "hashlib.file_digest"


def nvrag(*args: str, db: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The real CLI to the end. ``timeout`` only guards against a hang: CI machines run 2-3x slower."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NVRAG_DB=str(db))
    return subprocess.run(
        [sys.executable, "-m", "nvrag", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def test_demo_corpus_index_search_reindex_and_pinning(tmp_path: Path) -> None:
    db = tmp_path / "db"
    first = nvrag("index", str(DEMO_CORPUS), "--index", "demo", "--json", db=db)
    assert first.returncode == 0, first.stderr
    assert "model: auto: no CUDA GPU here, so the bundled all-MiniLM-L6-v2 (license Apache-2.0)" in first.stderr
    summary = json.loads(first.stdout)
    documents = sum(1 for line in DEMO_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip())
    assert summary["documents"] == documents
    assert summary["chunks_added"] >= documents and summary["failed"] == 0

    found = nvrag("search", README_QUERY, "--index", "demo", "-k", "3", "--json", db=db)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["doc_id"] == README_TOP_HIT
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    again = nvrag("index", str(DEMO_CORPUS), "--index", "demo", "--json", db=db)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert (rerun["chunks_added"], rerun["chunks_unchanged"]) == (0, summary["chunks_added"])

    refused = nvrag("search", README_QUERY, "--index", "demo", "--model", "nvrag/fake-wordlen", db=db)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: index 'demo' was built with all-MiniLM-L6-v2; it cannot be searched or extended with "
        "nvrag/fake-wordlen (a different vector space). Leave out --model to use all-MiniLM-L6-v2, or build a "
        "new index with nvrag/fake-wordlen"
    )

    listing = nvrag("info", "--json", db=db)
    (entry,) = json.loads(listing.stdout)["indexes"]
    assert entry["rows"] == summary["chunks_added"]
    assert entry["manifest"]["model"] == "all-MiniLM-L6-v2" and entry["manifest"]["dimension"] == 384


def test_ray_engine_from_the_cli_builds_the_same_index(tmp_path: Path) -> None:
    """`nvrag index --engine ray` starts a local Ray cluster of this machine's CPUs, and its index answers
    like the local engine's."""
    db = tmp_path / "db"
    # 60 of the demo's documents, the README query's answer among them: the CLI's wiring, not the engine's
    # every case (tests/indexer/test_ray_engine.py), so a Ray start and little else
    lines = DEMO_CORPUS.read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "some.jsonl"
    corpus.write_text("\n".join(lines[90:150]) + "\n", encoding="utf-8")
    assert README_TOP_HIT in corpus.read_text(encoding="utf-8")
    local = nvrag("index", str(corpus), "--index", "local", "--json", db=db)
    assert local.returncode == 0, local.stderr
    distributed = nvrag("index", str(corpus), "--index", "ray", "--engine", "ray", "--workers", "2", "--json", db=db)
    assert distributed.returncode == 0, distributed.stderr
    assert "embedding workers (CPU)" in distributed.stderr
    assert {**json.loads(distributed.stdout), "index": ""} == {**json.loads(local.stdout), "index": ""}
    ranked = []
    for name in ("local", "ray"):
        found = nvrag("search", README_QUERY, "--index", name, "-k", "10", "--json", db=db)
        assert found.returncode == 0, found.stderr
        ranked.append([(h["doc_id"], h["chunk_no"]) for h in json.loads(found.stdout)])
    assert ranked[0][0][0] == README_TOP_HIT
    assert ranked[0] == ranked[1]


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(tmp_path / "db"))
    # sys.modules[name] = None is how Python marks a module as not importable
    code = "import sys; sys.modules['ray'] = None; from nvrag.app.cli import main; main()"
    args = ["index", str(DEMO_CORPUS), "--index", "t", "--engine", "ray"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --engine ray needs Ray Data and lance-ray: pip install 'nvrag[ray]' (or leave out --engine)"
    )


def test_ray_engine_refuses_gpus_the_cluster_lacks_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "db"
    refused = nvrag("index", str(DEMO_CORPUS), "--index", "t", "--engine", "ray", "--gpus-per-worker", "1", db=db)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: --gpus-per-worker 1: the Ray cluster has 0 GPUs; use --gpus-per-worker 0 for CPU workers"
    )
    assert json.loads(nvrag("info", "--json", db=db).stdout)["indexes"] == []


def test_optimize_tunes_the_ann_index_by_query_like_probes(tmp_path: Path) -> None:
    db, corpus = tmp_path / "db", tmp_path / "corpus.jsonl"
    words = ["a", "to", "the", "word", "seven", "letters", "sentence"]
    with corpus.open("w", encoding="utf-8") as f:
        for i in range(5200):  # above the 5,000 rows an ANN index needs
            text = " ".join(words[(i * j + j) % 7] for j in range(1, 4 + i % 9))
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    built = nvrag("index", str(corpus), "--index", "big", "--model", "nvrag/fake-wordlen", db=db)
    assert built.returncode == 0, built.stderr
    queries = nvrag("optimize", "big", db=db)
    assert queries.returncode == 0, queries.stderr
    assert "embedding the recall probe's queries with nvrag/fake-wordlen" in queries.stderr
    assert "measured with 200 query-like probes (spans of its chunks, embedded as queries)" in queries.stderr
    (entry,) = json.loads(nvrag("info", "--json", db=db).stdout)["indexes"]  # what searches use is what it printed
    manifest = entry["manifest"]
    nprobes, recall, refine = manifest["ann_nprobes"], manifest["ann_recall"], manifest["ann_refine"]
    said = f"probe {nprobes} partitions and re-rank {refine} candidates per hit: recall@10 {recall:.3f}"
    assert said in queries.stderr
    own = nvrag("optimize", "big", "--probe", "vectors", db=db)
    assert own.returncode == 0, own.stderr
    assert "embedding" not in own.stderr and "measured with 200 of its own vectors" in own.stderr
    wrong = nvrag("optimize", "big", "--probe", "texts", db=db)
    assert wrong.returncode == 2 and wrong.stderr.strip() == "error: unknown --probe 'texts'; use queries or vectors"
