"""Crash safety with real processes: SIGKILL mid-run, Ctrl-C, and a re-run that completes the index exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.embedder.pinning import model_key
from nvrag.indexer import load_corpus
from nvrag.indexer.chunking import chunk_document, default_settings
from nvrag.schema import Document
from nvrag.store import LanceStore
from tests.conftest import DEMO_CORPUS
from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow
CORPUS_LINES = 150  # of the demo corpus: about 180 chunks, six batches of 32


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    lines = DEMO_CORPUS.read_text(encoding="utf-8").splitlines()[:CORPUS_LINES]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def args(corpus: Path) -> list[str]:
    return ["index", str(corpus), "--index", "crash", "--model", "all-MiniLM-L6-v2", "--batch-size", "32"]


def expected_by_doc(minilm: MiniLMEmbedder, corpus: Path) -> dict[str, set[str]]:
    settings = default_settings(minilm.max_text_tokens)
    by_doc: dict[str, set[str]] = {}
    for doc in load_corpus(corpus):
        assert isinstance(doc, Document)
        by_doc[doc.doc_id] = {c.chunk_id for c in chunk_document(doc, minilm.token_spans, settings, model_key(minilm))}
    return by_doc


def expected_ids(minilm: MiniLMEmbedder, corpus: Path) -> set[str]:
    return {c for ids in expected_by_doc(minilm, corpus).values() for c in ids}


def whole_documents(db: Path, minilm: MiniLMEmbedder, corpus: Path) -> bool:
    """Every stored document holds all of its chunks: commits are whole documents, never part of one."""
    expected = expected_by_doc(minilm, corpus)
    return all(ids == expected[doc] for doc, ids in LanceStore(str(db)).open("crash").chunk_ids_by_doc().items())


def start(db: Path, corpus: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db))
    return subprocess.Popen(
        [sys.executable, "-m", "nvrag", *args(corpus)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(db: Path, rows: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        store = LanceStore(str(db))
        if db.exists() and store.exists("crash"):
            count = store.open("crash").count()
            if count >= rows:
                return count
        time.sleep(0.2)
    raise AssertionError(f"the indexer never stored {rows} rows (exit code {proc.poll()})")


def stored_ids(db: Path) -> list[str]:
    grouped = LanceStore(str(db)).open("crash").chunk_ids_by_doc()
    return [chunk_id for ids in grouped.values() for chunk_id in ids]


def test_sigkill_mid_run_then_rerun_completes_without_duplicates(
    tmp_path: Path, corpus: Path, minilm: MiniLMEmbedder
) -> None:
    db = tmp_path / "db"
    proc = start(db, corpus)
    wait_for_rows(db, 64, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    partial = stored_ids(db)
    complete = len(expected_ids(minilm, corpus))
    # committed batches of whole documents, never part of one
    assert len(partial) == len(set(partial)) and 64 <= len(partial) <= complete
    assert whole_documents(db, minilm, corpus)
    rerun = nvrag(*args(corpus), "--json", db=db)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    ids = stored_ids(db)
    expected = expected_ids(minilm, corpus)
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected
    assert (
        summary["chunks_unchanged"] >= len(partial)
        and summary["chunks_added"] == len(expected) - summary["chunks_unchanged"]
    )


def test_ctrl_c_stops_after_the_batch_and_a_rerun_continues(
    tmp_path: Path, corpus: Path, minilm: MiniLMEmbedder
) -> None:
    db = tmp_path / "db"
    proc = start(db, corpus)
    wait_for_rows(db, 32, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "stopping after the batch in flight" in err and "stopped early:" in err
    report = json.loads((db / "crash.report.json").read_text(encoding="utf-8"))
    assert report["interrupted"] is True and report["chunks_added"] >= 32
    assert whole_documents(db, minilm, corpus)
    rerun = nvrag(*args(corpus), db=db)
    assert rerun.returncode == 0, rerun.stderr
    assert set(stored_ids(db)) == expected_ids(minilm, corpus) and len(stored_ids(db)) == len(
        expected_ids(minilm, corpus)
    )
    assert json.loads((db / "crash.report.json").read_text(encoding="utf-8"))["interrupted"] is False
