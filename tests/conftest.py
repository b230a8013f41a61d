"""Shared fixtures. Nothing here downloads anything: the hub is switched off for every test."""

from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# An empty Hugging Face cache: tests never see weights a developer happens to have downloaded.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="nvrag-test-hf-")

from nvrag.embedder import WordLengthEmbedder
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.store import LanceStore

atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo" / "stdlib.jsonl"


@pytest.fixture
def fake() -> WordLengthEmbedder:
    return WordLengthEmbedder()


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def built_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus indexed as "demo" by the real `nvrag index` with its default model (the bundled one on a
    CPU), once a session: ``demo_copy`` gives each user its own copy to change."""
    from tests.e2e.test_cli_e2e import nvrag

    db = tmp_path_factory.mktemp("demo-built") / "db"
    built = nvrag("index", str(DEMO_CORPUS), "--index", "demo", db=db)
    assert built.returncode == 0, built.stderr
    return db


def demo_copy(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ``built_demo`` data directory that a test may write into."""
    db = tmp_path_factory.mktemp("demo") / "db"
    shutil.copytree(built, db)
    return db


@pytest.fixture
def store(tmp_path: Path) -> LanceStore:
    return LanceStore(str(tmp_path / "db"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No NVRAG_* settings leak in from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("NVRAG_"):
            monkeypatch.delenv(key)
    yield


NVEMBED_TINY = REPO.parent / "shared" / "fixtures" / "nvembed-tiny"


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((NVEMBED_TINY / "golden.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(autouse=True)
def _collect_what_a_test_froze() -> Iterator[None]:
    """Servers started in-process freeze what they loaded (serving.prepare_for_serving); unfrozen after each
    test, so what the test left behind is collected as usual."""
    yield
    gc.unfreeze()
