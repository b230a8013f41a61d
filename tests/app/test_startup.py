"""Start-up: importing the CLI (what `nvrag --help` does) loads none of the heavy libraries; each is imported by
the commands and code paths that use it. Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

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


def imported_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
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
