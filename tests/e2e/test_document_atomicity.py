"""Every document all-or-nothing: `nvrag index` rewriting an index (each document's text changed, chunk counts
up and down) is killed with SIGKILL at many points; after each kill every document holds exactly its old chunks
or exactly its new ones (never part of one, never both), and a re-run completes the index exactly. The fake
model (vectors by hand) and real LanceDB, in real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nvrag.store import LanceStore
from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow
FAKE = "nvrag/fake-wordlen"
DOCS = 150
KILLS = 9
GOLDEN = 0.618034  # spreads the n-th kill over its window


def corpus(path: Path, version: int) -> Path:
    lines = []
    for i in range(DOCS):
        words = 40 + ((i * 37 + version * 53) % 160)  # 40-199 words: one to several chunks, changing per version
        text = " ".join(f"v{version}w{(i * j + version) % 89}" for j in range(words))
        lines.append(json.dumps({"id": f"doc{i}", "text": text}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chunks_by_doc(db: Path) -> dict[str, set[str]]:
    return LanceStore(str(db)).open("t").chunk_ids_by_doc()


def run(db: Path, docs: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db))
    command = [sys.executable, "-m", "nvrag", "index", str(docs), "--index", "t", "--model", FAKE, "--batch-size", "8"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_kill_at_any_point_leaves_each_document_wholly_old_or_wholly_new(tmp_path: Path) -> None:
    old, new = corpus(tmp_path / "v1.jsonl", 1), corpus(tmp_path / "v2.jsonl", 2)
    base = tmp_path / "base"
    assert nvrag("index", str(old), "--index", "t", "--model", FAKE, db=base).returncode == 0
    clean = tmp_path / "clean"
    assert nvrag("index", str(new), "--index", "t", "--model", FAKE, db=clean).returncode == 0
    before, after = chunks_by_doc(base), chunks_by_doc(clean)
    assert all(before[d] != after[d] for d in before) and sum(map(len, after.values())) > 2 * DOCS

    # how long a whole rewrite takes here, to spread the kills over it
    timed = tmp_path / "timed"
    shutil.copytree(base, timed)
    started = time.monotonic()
    whole = run(timed, new)
    assert whole.communicate(timeout=600)[1] is not None and whole.returncode == 0
    took = time.monotonic() - started
    assert chunks_by_doc(timed) == after

    # The kills follow the writes, not the clock alone: a shared machine's speed drifts between runs, so a kill
    # that found nothing renewed moves the next ones later and one that found everything renewed moves them
    # earlier; within that window they are spread by the golden ratio.
    mixed, early, late = 0, 0.0, took
    for n in range(KILLS):
        db = tmp_path / f"kill{n}"
        shutil.copytree(base, db)
        process = run(db, new)
        delay = early + (late - early) * (0.15 + 0.7 * ((n * GOLDEN) % 1))
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        stored = chunks_by_doc(db)
        assert set(stored) == set(before), f"kill {n}: a document vanished or appeared"
        for doc, ids in stored.items():
            assert ids in (before[doc], after[doc]), f"kill {n}: {doc} holds part of a version, or both"
        renewed = sum(stored[d] == after[d] for d in stored)
        if renewed == 0:
            early = delay
        elif renewed == DOCS:
            late = delay
        else:
            mixed += 1
    assert mixed >= 2, f"only {mixed} of {KILLS} kills landed mid-run (last window {early:.2f}-{late:.2f} s)"
    # and the last killed index, run again, is the clean rewrite exactly
    again = run(db, new)
    errors = again.communicate(timeout=600)[1]
    assert again.returncode == 0, errors
    assert chunks_by_doc(db) == after
