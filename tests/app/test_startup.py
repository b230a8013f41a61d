"""Start-up: importing the CLI (what `nvrag --help` does) loads none of the heavy libraries; each is imported by
the commands and code paths that use it. Checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "torch",
    "transformers",
    "tokenizers",
    "lancedb",
    "lance",
    "pyarrow",
    "gradio",
    "ray",
    "langchain_core",
    "faiss",
    "huggingface_hub",
)


def imported_after(statement: str, env: dict[str, str] | None = None) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True, env=env
    )
    return list(json.loads(result.stdout.strip().splitlines()[-1]))  # the last line: after any help text


def test_importing_the_cli_imports_no_heavy_library() -> None:
    assert imported_after("import nvrag.app.cli") == []


def test_help_runs_without_them_and_a_store_or_model_brings_only_its_own() -> None:
    assert (
        imported_after(
            "from nvrag.app.cli import main\n"
            "sys.argv = ['nvrag', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass"
        )
        == []
    )
    assert imported_after("from nvrag.embedder import REGISTRY, get_spec; get_spec('minilm')") == []
    assert "torch" not in imported_after("from nvrag.store import LanceStore")
    assert "lancedb" not in imported_after("from nvrag.embedder import load_embedder; load_embedder('minilm')")


def test_reading_an_index_needs_lance_not_lancedb(tmp_path: Path) -> None:
    """`nvrag info` and searches read the tables through pylance: lancedb (1.6 s to import) is for writes."""
    from nvrag.store import LanceStore
    from tests.store.test_lancedb_store import chunk, manifest, unit

    LanceStore(str(tmp_path)).create(manifest()).upsert([chunk(0)], unit([[1, 0, 0, 0]]))
    env = {**os.environ, "NVRAG_DB": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    listed = imported_after(
        "from nvrag.app.cli import main\n"
        "sys.argv = ['nvrag', 'info', '--json']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code",
        env,
    )
    assert "lance" in listed and "lancedb" not in listed and "torch" not in listed
    read = imported_after(
        "from nvrag.store import LanceStore\n"
        f"table = LanceStore({str(tmp_path)!r}).open('docs')\n"
        "assert [h.chunk.chunk_id for h in table.search([1.0, 0.0, 0.0, 0.0], 3)] == ['c0']\n"
        "assert table.count() == 1 and [c.chunk_id for c in table.get(['c0'])] == ['c0']",
    )
    assert "lancedb" not in read


def test_a_search_with_the_bundled_model_needs_no_torch(tmp_path: Path) -> None:
    """`nvrag search` cold: the query runs on MiniLM's NumPy engine, in float32 on the CPU (1.5 s less start-up)."""
    from typer.testing import CliRunner

    from nvrag.app.cli import app

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        '{"id": "cold", "text": "the common cold is a viral infection"}\n'
        '{"id": "tax", "text": "how to file an income tax return"}\n',
        encoding="utf-8",
    )
    db = str(tmp_path / "db")
    made = CliRunner().invoke(app, ["index", str(corpus), "--index", "d", "--model", "all-MiniLM-L6-v2", "--db", db])
    assert made.exit_code == 0, made.output
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")} | {"HF_HUB_OFFLINE": "1"}
    searched = imported_after(
        "from nvrag.app.cli import main\n"
        f"sys.argv = ['nvrag', 'search', 'a virus infection', '--index', 'd', '--db', {db!r}, '--json', '-k', '1']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code",
        env,
    )
    assert "torch" not in searched and "lancedb" not in searched and "tokenizers" in searched


def test_indexing_deleting_and_dropping_need_lance_not_lancedb(tmp_path: Path) -> None:
    """`nvrag index` (creating the index, then changing and pruning it, its full-text index built and then
    optimised), `delete` and `drop` write through pylance: lancedb's 1.3 s more import is for vector-index builds."""
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the common cold is a viral infection", encoding="utf-8")
    (corpus / "b.txt").write_text("how to file an income tax return", encoding="utf-8")
    db = str(tmp_path / "db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")} | {"HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> list[str]:
        argv = ["nvrag", *args, "--db", db]
        return imported_after(
            f"from nvrag.app.cli import main\nsys.argv = {argv!r}\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code",
            env,
        )

    assert "lancedb" not in run("index", str(corpus), "--index", "d", "--model", "all-MiniLM-L6-v2")
    (corpus / "a.txt").write_text("the common cold is a viral infection of the nose", encoding="utf-8")
    (corpus / "b.txt").unlink()
    changed = run("index", str(corpus), "--index", "d", "--prune")
    assert "lancedb" not in changed and "lance" in changed and "torch" in changed  # (it embedded the change)
    import lance

    from nvrag.store import LanceStore

    store = LanceStore(db)
    table = store.open("d")
    assert [c.doc_id for c in table.get(sorted(table.chunk_ids_by_doc()["a.txt"]))] == ["a.txt"]
    assert table.count() == 1 and [h.chunk.doc_id for h in table.text_search("noses", 5)] == ["a.txt"]
    assert {i.name for i in lance.dataset(table.uri).describe_indices()} == {"title_idx", "text_idx"}
    assert "lancedb" not in run("delete", "d", "a.txt", "--yes")
    assert LanceStore(db).open("d").count() == 0
    assert "lancedb" not in run("drop", "d", "--yes")
    assert not LanceStore(db).exists("d") and not Path(table.uri).exists()


def test_the_cuda_check_asks_torch_only_where_an_nvidia_driver_may_be(monkeypatch: pytest.MonkeyPatch) -> None:
    from nvrag.app import devices

    monkeypatch.setattr(devices.sys, "platform", "darwin")
    assert devices.nvidia_driver_possible()  # elsewhere than Linux torch decides
    monkeypatch.undo()
    driver = Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    assert devices.nvidia_driver_possible() == driver
    if not driver:  # this machine (CI): no torch import to learn there is no GPU
        assert imported_after("from nvrag.app.devices import cuda_available\nassert cuda_available() is False") == []
