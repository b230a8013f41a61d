"""One writer per index: real `nvrag index` processes started at the same moment, a killed writer's lock taken
over, readers never blocked, and the UI's uploads under the same lock (LanceDB and FAISS)."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer
from nvrag.store import LanceStore, Store
from nvrag.store.faiss_store import FaissStore
from tests.hostile.conftest import finish, no_traceback, nvrag, start

pytestmark = pytest.mark.slow
FAKE = "nvrag/fake-wordlen"
STORES = ["lancedb", "faiss"]
# a run of this many documents at 50 a batch outlasts its process start (1-2 s of writes on a 2-core VM)
DOCS = 8_000


def write_corpus(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(
                json.dumps({"id": f"d{i}", "text": f"document {i} on topic {i % 37}, with a few more words"}) + "\n"
            )
    return path


def open_store(kind: str, db: Path) -> Store:
    return FaissStore(db) if kind == "faiss" else LanceStore(str(db))


def stored_ids(kind: str, db: Path, index: str = "x") -> list[str]:
    """Every chunk-id row of the index as stored, duplicates included."""
    if kind == "faiss":
        table: Any = FaissStore(db).open(index)  # its SQLite rows and FAISS vectors, read directly
        rows = [r[0] for r in table._db.execute(f'SELECT chunk_id FROM "c_{index}"')]
        assert table._vectors.index.ntotal == len(rows)  # one vector per row, none twice
        return rows
    import lancedb

    return list(lancedb.connect(str(db)).open_table(index).to_arrow()["chunk_id"].to_pylist())


def index_args(corpus: Path) -> tuple[str, ...]:
    return ("index", str(corpus), "--index", "x", "--model", FAKE, "--batch-size", "50", "--json")


@pytest.mark.parametrize("kind", STORES)
def test_two_writers_at_the_same_moment_never_duplicate(kind: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    clean = nvrag(*index_args(corpus), db=tmp_path / "clean", NVRAG_STORE=kind)
    assert clean.returncode == 0, clean.stderr
    db = tmp_path / "db"
    runs = [start(*index_args(corpus), db=db, NVRAG_STORE=kind) for _ in range(2)]
    results = [finish(*run) for run in runs]
    for run in results:
        no_traceback(run)
    codes = sorted(r.returncode for r in results)
    assert codes[0] == 0
    refused = [r for r in results if r.returncode == 75]
    assert codes in ([0, 75], [0, 0]), [r.stderr for r in results]
    for run in refused:
        (line,) = run.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: index x is being written by another process (pid ")
        assert line.endswith("); try again when it finishes")
    ids = stored_ids(kind, db)
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(stored_ids(kind, tmp_path / "clean"))
    rerun = nvrag(*index_args(corpus), db=db, NVRAG_STORE=kind)
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["chunks_added"] == 0


@pytest.mark.parametrize("kind", STORES)
def test_a_killed_writers_lock_is_taken_over(kind: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    db = tmp_path / "db"
    process, folder = start(*index_args(corpus), db=db, NVRAG_STORE=kind)
    lock = db / "x.lock"
    deadline = time.monotonic() + 300
    while not (lock.exists() and lock.read_text().strip() == str(process.pid)):
        assert time.monotonic() < deadline and process.poll() is None, (folder / "err").read_text()
        time.sleep(0.02)
    time.sleep(0.5)  # some batches committed
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert lock.read_text().strip() == str(process.pid)  # the stale lock file is still there
    resumed = nvrag(*index_args(corpus), db=db, NVRAG_STORE=kind)
    no_traceback(resumed)
    assert resumed.returncode == 0, resumed.stderr
    ids = stored_ids(kind, db)
    assert len(ids) == len(set(ids)) == DOCS


@pytest.mark.parametrize("kind", STORES)
def test_readers_are_not_blocked_and_writers_are_refused_while_the_lock_is_held(kind: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", 50)
    db = tmp_path / "db"
    assert nvrag(*index_args(corpus), db=db, NVRAG_STORE=kind).returncode == 0
    store = open_store(kind, db)
    with store.writing("x"):  # this test process is the writer now
        found = nvrag("search", "topic 3", "--index", "x", "-k", "3", "--json", db=db, NVRAG_STORE=kind)
        assert found.returncode == 0, found.stderr
        assert len(json.loads(found.stdout)) == 3
        busy = nvrag(*index_args(corpus), db=db, NVRAG_STORE=kind)
        assert busy.returncode == 75
        assert busy.stderr.strip().splitlines()[-1] == (
            f"error: index x is being written by another process (pid {os.getpid()}); try again when it finishes"
        )
        optimize = nvrag("optimize", "x", db=db, NVRAG_STORE=kind)
        assert optimize.returncode == 75
    assert nvrag(*index_args(corpus), db=db, NVRAG_STORE=kind).returncode == 0  # free again


@pytest.mark.parametrize("kind", STORES)
def test_an_upload_meets_a_cli_writer(kind: str, tmp_path: Path, fake: WordLengthEmbedder) -> None:
    """The UI's upload path while a CLI run holds the index: refused in one line, nothing written."""
    from nvrag.ui.callbacks import UIContext, upload

    db = tmp_path / "db"
    corpus = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    db.mkdir()
    store = open_store(kind, db)
    received = tmp_path / "received"
    received.mkdir()
    (received / "note.txt").write_text("an uploaded note", encoding="utf-8")
    ctx = UIContext(
        store=store,
        retriever_for=lambda name: None,  # type: ignore[arg-type,return-value]
        run_index=Indexer(store, fake).run,
        upload_root=tmp_path / "uploads",
        received_root=received,
    )
    process, folder = start(*index_args(corpus), db=db, NVRAG_STORE=kind)
    lock = db / "x.lock"
    deadline = time.monotonic() + 300
    while not (lock.exists() and lock.read_text().strip() == str(process.pid) and store.exists("x")):
        assert time.monotonic() < deadline and process.poll() is None, (folder / "err").read_text()
        time.sleep(0.02)
    text = upload(ctx, "x", [str(received / "note.txt")])
    assert text == (
        f"**Could not index the files:** index x is being written by another process \\(pid {process.pid}\\); "
        "try again when it finishes"
    )
    run = finish(process, folder)
    assert run.returncode == 0, run.stderr
    ids = stored_ids(kind, db)
    assert len(ids) == len(set(ids)) == DOCS
    assert upload(ctx, "x", [str(received / "note.txt")]).startswith("**Indexed into x:** 1 documents, 1 chunks")
    assert len(stored_ids(kind, db)) == DOCS + 1


@pytest.mark.parametrize("kind", STORES)
def test_two_uploads_at_once_from_two_servers(kind: str, tmp_path: Path, fake: WordLengthEmbedder) -> None:
    """Two servers on one data directory upload into one index at the same moment: each upload is indexed or
    refused in one line, and no chunk is stored twice."""
    import threading

    from nvrag.ui.callbacks import UIContext, upload

    db = tmp_path / "db"
    received = tmp_path / "received"
    received.mkdir()
    contexts, files = [], []
    for n in range(2):
        store = open_store(kind, db)
        contexts.append(
            UIContext(
                store=store,
                retriever_for=lambda name: None,  # type: ignore[arg-type,return-value]
                run_index=lambda request, store=store: Indexer(store, fake).run(replace(request, batch_size=4)),  # type: ignore[misc]
                upload_root=tmp_path / "uploads",
                received_root=received,
            )
        )
        path = received / f"batch{n}.jsonl"
        path.write_text(
            "".join(json.dumps({"id": f"{n}-{i}", "text": f"upload {n} line {i}"}) + "\n" for i in range(400))
        )
        files.append(path)
    Indexer(open_store(kind, db), fake).index("x", [])  # uploads go to existing indexes
    reports: list[str] = [""] * 2
    barrier = threading.Barrier(2)

    def run(n: int) -> None:
        barrier.wait()
        reports[n] = upload(contexts[n], "x", [str(files[n])])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    indexed = [r for r in reports if r.startswith("**Indexed into x:** 400 documents")]
    refused = [r for r in reports if "is being written by another process" in r]
    assert len(indexed) >= 1 and len(indexed) + len(refused) == 2, reports
    ids = stored_ids(kind, db)
    assert len(ids) == len(set(ids)) == 400 * len(indexed)
