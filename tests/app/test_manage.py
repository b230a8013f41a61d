"""`nvrag documents`, `nvrag delete` and `nvrag drop` in process (fake model, real LanceDB), and drop refused
while another process holds the index's write lock."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nvrag.app.cli import app
from nvrag.embedder.dtypes import choose_dtype
from nvrag.store import LanceStore
from tests.app.test_cli import FAKE, run
from tests.store.test_conformance import DIM, corpus
from tests.store.test_lancedb_store import manifest


@pytest.fixture
def db(tmp_path: Path) -> str:
    corpus = tmp_path / "docs.jsonl"
    rows = [{"id": "a", "text": "one two three"}, {"id": "b", "text": "four five"}, {"id": "c", "text": "six"}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = str(tmp_path / "db")
    code, _, err = run("index", str(corpus), "--index", "t", "--model", FAKE, "--db", path)
    assert code == 0, err
    return path


@pytest.mark.usefixtures("clean_env")
def test_documents_lists_every_document(db: str) -> None:
    code, out, err = run("documents", "t", "--db", db, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(d["id"], d["origin"], d["chunks"]) for d in listed] == [
        ("a", "path", 1),
        ("b", "path", 1),
        ("c", "path", 1),
    ]
    assert all(d["source"].endswith("docs.jsonl:" + str(n)) for n, d in enumerate(listed, start=1))
    written = {datetime.strptime(d["updated"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for d in listed}
    assert len(written) == 1 and timedelta(0) <= datetime.now(UTC) - written.pop() < timedelta(minutes=10)
    code, out, _ = run("documents", "t", "--db", db)
    assert code == 0 and "3 documents in t" in out and listed[0]["updated"] in out
    from nvrag.indexer import list_documents

    assert [d.id for d in list_documents(LanceStore(db), "t", offset=1, limit=1)] == ["b"]


@pytest.mark.usefixtures("clean_env")
def test_a_document_is_updated_when_its_newest_chunk_was_written(tmp_path: Path) -> None:
    from nvrag.indexer import list_documents

    chunks, vectors = corpus(6)  # d0: c0-c2, d1: c3-c5
    table = LanceStore(str(tmp_path / "db")).create(manifest(dim=DIM))
    table.upsert(chunks, vectors)
    time.sleep(1.1)  # the listing shows seconds
    table.upsert(chunks[2:3], vectors[2:3])  # one chunk of d0 changes
    times = table.indexed_at([c.chunk_id for c in chunks])
    listed = {d.id: d.updated for d in list_documents(LanceStore(str(tmp_path / "db")), "docs")}
    assert listed == {
        "d0": times["c2"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "d1": max(times[c] for c in ("c3", "c4", "c5")).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert listed["d0"] > listed["d1"]


@pytest.mark.usefixtures("clean_env")
def test_delete_removes_documents_and_asks_first(db: str) -> None:
    code, _, err = run("delete", "t", "b", "--db", db, input="n\n")
    assert (code == 1 and "nothing was changed" in err) or "Add --yes" in err
    code, _, err = run("delete", "t", "b", "zz", "--yes", "--db", db)
    assert code == 2 and "has no document 'zz'; nothing was deleted" in err
    code, _, err = run("delete", "t", "b", "--yes", "--db", db)
    assert code == 0 and "deleted 1 documents (1 chunks)" in err
    assert [d["id"] for d in json.loads(run("documents", "t", "--db", db, "--json")[1])] == ["a", "c"]
    assert json.loads(run("search", "five", "--index", "t", "--db", db, "--json")[1])[0]["doc_id"] != "b"


def hold_lock(db: str, started: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    store = LanceStore(db)
    with store.writing("t"):
        started.set()
        done.wait(60)


@pytest.mark.usefixtures("clean_env")
def test_drop_removes_an_index_but_not_while_it_is_written(db: str) -> None:
    code, _, err = run("drop", "t", "--db", db)  # no terminal to ask on, no --yes
    assert code == 2 and "Add --yes to confirm" in err
    ctx = multiprocessing.get_context("spawn")
    started, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(db, started, done))
    holder.start()
    try:
        assert started.wait(60)
        code, _, err = run("drop", "t", "--yes", "--db", db)
        assert code == 75, err  # another process writes it
    finally:
        done.set()
        holder.join(60)
    code, _, err = run("drop", "t", "--yes", "--db", db)
    assert code == 0 and "removed index 't' (3 chunks)" in err
    assert json.loads(run("info", "--db", db, "--json")[1])["indexes"] == []
    code, _, err = run("drop", "t", "--yes", "--db", db)
    assert code == 2 and "no index named 't'" in err


@pytest.mark.usefixtures("clean_env")
def test_a_run_names_what_it_skipped_and_what_left_path(tmp_path: Path) -> None:
    folder, db = tmp_path / "notes", str(tmp_path / "db")
    folder.mkdir()
    texts = (("a.txt", "alpha"), ("e.md", "epsilon"), ("f.md", "phi"), ("b.rtf", "x"), ("c.RTF", "x"), ("README", "x"))
    for name, text in texts:
        (folder / name).write_text(text, encoding="utf-8")
    code, out, err = run("index", str(folder), "--index", "n", "--model", FAKE, "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out)["skipped"] == {"(none)": 1, ".rtf": 2}
    code, _, err = run("index", str(folder), "--index", "n", "--db", db)
    assert "skipped files of types nvrag does not read: (none) x1, .rtf x2" in err
    (folder / "e.md").unlink()
    code, out, err = run("index", str(folder), "--index", "n", "--db", db, "--json")
    assert code == 0 and json.loads(out)["not_in_path"] == 1
    code, _, err = run("index", str(folder), "--index", "n", "--db", db)
    assert "1 documents of the index are not in PATH any more" in err and "--prune removes them" in err
    code, out, _ = run("index", str(folder), "--index", "n", "--db", db, "--prune", "--json")
    assert (json.loads(out)["documents_removed"], json.loads(out)["not_in_path"]) == (1, 0)
    # the summary says which removals are chunks (a changed document's old ones) and which are documents
    (folder / "a.txt").write_text("alpha beta", encoding="utf-8")
    code, _, err = run("index", str(folder), "--index", "n", "--db", db)
    assert "2 documents, 1 chunks added, 1 unchanged, 1 chunks removed, 0 failed" in err, err
    (folder / "f.md").unlink()
    code, _, err = run("index", str(folder), "--index", "n", "--db", db, "--prune")
    assert "1 documents, 0 chunks added, 1 unchanged, 1 chunks removed, 1 documents removed, 0 failed" in err, err

    unreadable = tmp_path / "rtf-only"
    unreadable.mkdir()
    (unreadable / "x.rtf").write_text("x", encoding="utf-8")
    code, _, err = run("index", str(unreadable), "--index", "r", "--model", FAKE, "--db", db)
    assert code == 1 and "no document nvrag can read was found there; it reads" in err and ".pdf" in err


@pytest.mark.parametrize(
    ("command", "module", "extra"), [("mcp", "mcp", "serve"), ("serve", "prometheus_client", "serve")]
)
def test_a_missing_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, module: str, extra: str
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    code, _, err = run(command, "--db", str(tmp_path / "db"))
    assert code == 2
    assert (
        err.strip()
        == f"error: nvrag {command} needs the {extra} extra ({module} missing): pip install 'nvrag[{extra}]'"
    )


@pytest.mark.usefixtures("clean_env")
def test_info_never_cuts_an_index_name(tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "one"}) + "\n", encoding="utf-8")
    db, name = str(tmp_path / "db"), "eval-nfcorpus-all-minilm-l6-v2-doc-bfloat16-and-some-more"
    assert run("index", str(corpus), "--index", name, "--model", FAKE, "--db", db)[0] == 0
    runner_narrow = CliRunner()
    result = runner_narrow.invoke(app, ["info", "--db", db], env={"COLUMNS": "60"})
    assert result.exit_code == 0 and name in result.stdout


@pytest.mark.usefixtures("clean_env")
def test_info_on_an_80_column_terminal_cuts_no_word(tmp_path: Path) -> None:
    """A table of seven columns cut the model name, the time and the models' descriptions into pieces of a few
    letters at 80 columns; the lists wrap at spaces: every word of every entry comes out whole."""
    from nvrag.embedder import REGISTRY
    from nvrag.reranker.loading import KNOWN_RERANKERS

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "one"}) + "\n", encoding="utf-8")
    db = str(tmp_path / "db")
    assert run("index", str(corpus), "--index", "notes", "--model", FAKE, "--db", db)[0] == 0
    result = CliRunner().invoke(app, ["info", "--db", db], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines[2:]) <= 80  # (the first two are a path and one sentence)
    words = set(result.stdout.split())
    manifest = json.loads(run("info", "--db", db, "--json")[1])["indexes"][0]["manifest"]
    updated = manifest["updated_at"][:16].replace("T", " ")  # the manifest's UTC time, to the minute
    assert f"updated {updated} UTC" in " ".join(result.stdout.split())
    assert {"notes", FAKE, "1", "rows,"} <= words
    for about in [*(s.description for s in REGISTRY.values()), *(r.description for r in KNOWN_RERANKERS)]:
        assert set(about.split()) <= words, about


@pytest.mark.parametrize("command", [[], ["index"], ["search"], ["serve"], ["drop"], ["eval"], ["rerank"]])
def test_flags_show_no_value_in_help(command: list[str]) -> None:
    """No flag, --help included, is shown with `<bool>` as if it took a value; options that take one keep theirs."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "--help" in result.stdout and "<bool>" not in result.stdout
    if command == ["index"]:
        assert [line for line in result.stdout.splitlines() if "--prune" in line]
        assert any("--chunk-tokens" in line and "<int>" in line for line in result.stdout.splitlines())


@pytest.mark.usefixtures("clean_env")
def test_the_model_line_names_the_dtype_and_why(tmp_path: Path) -> None:
    code, _, err = run("embed", "hello", "--model", "all-MiniLM-L6-v2", "--dtype", "bfloat16")
    assert code == 0, err
    why = choose_dtype("bfloat16", "cpu").reason  # "as requested", and on a CPU without bfloat16 what it computes in
    assert f"model: all-MiniLM-L6-v2 as requested (license Apache-2.0), computing in bfloat16 ({why})" in err


@pytest.mark.usefixtures("clean_env")
def test_info_lists_models_and_rerankers_by_names_one_can_type(tmp_path: Path) -> None:
    """Model and reranker names are what --model and --rerank-model take: shown whole even at 60 columns."""
    from nvrag.embedder import REGISTRY
    from nvrag.reranker.loading import KNOWN_RERANKERS

    result = CliRunner().invoke(app, ["info", "--db", str(tmp_path / "db")], env={"COLUMNS": "60"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for name in [*REGISTRY, *(r.hub_id for r in KNOWN_RERANKERS)]:
        assert any(name in line for line in lines), name
    listed = json.loads(CliRunner().invoke(app, ["info", "--db", str(tmp_path / "db"), "--json"]).stdout)
    assert [r["name"] for r in listed["rerankers"]] == [r.hub_id for r in KNOWN_RERANKERS]
    assert {r["kind"] for r in listed["rerankers"]} == {"llm", "cross-encoder"}
