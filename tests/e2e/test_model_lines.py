"""The serving commands say which model computes in which dtype and why, as every other command does: `serve`
for each model it warmed up (before its "ready:" line), `ui` and `mcp` for each served index's query model
(loaded in the background, so the first search waits for nothing), on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nvrag.model.int8 import packed_int8_supported
from nvrag.model.prepack import prepack_supported
from tests.api.test_server import free_port
from tests.e2e.test_cli_e2e import nvrag
from tests.model.test_int8 import INT8_DOT_CPU, NO_INT8_DOT, NO_PACKED

pytestmark = pytest.mark.slow
FAKE = "nvrag/fake-wordlen"
NVEMBED_TINY = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "nvembed-tiny"


def stderr_until(args: list[str], db: Path, wanted: str, log: Path) -> str:
    """Run ``nvrag ARGS`` until its stderr holds ``wanted`` (or it exits, or a generous guard passes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db), GRADIO_ANALYTICS_ENABLED="False")
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "nvrag", *args], env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=sink)  # fmt: skip
        try:
            deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
            while wanted not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(timeout=60)
            assert process.stdin is not None
            process.stdin.close()
    return log.read_text()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("lines") / "db"
    corpus = db.parent / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "alpha beta"}\n')
    assert nvrag("index", str(corpus), "--index", "demo", "--model", FAKE, db=db).returncode == 0
    return db


def test_serve_names_each_model_s_dtype_before_ready(db: Path, tmp_path: Path) -> None:
    text = stderr_until(["serve", "--model", FAKE, "--port", str(free_port())], db, "ready:", tmp_path / "e")
    assert f"model: {FAKE}, computing in float32" in text, text
    assert text.index(f"model: {FAKE}") < text.index("ready:")


def test_ui_and_mcp_name_each_index_s_query_model(db: Path, tmp_path: Path) -> None:
    wanted = f"index demo: model: {FAKE}, computing in float32"
    ui = stderr_until(["ui", "--index", "demo", "--port", str(free_port())], db, wanted, tmp_path / "ui")
    assert wanted in ui, ui
    mcp = stderr_until(["mcp", "--index", "demo"], db, wanted, tmp_path / "mcp")
    assert wanted in mcp, mcp


@pytest.mark.skipif(not prepack_supported(), reason="this PyTorch cannot prepack bf16 weights")
def test_serve_prepacks_a_cpu_bfloat16_model_after_ready(db: Path, tmp_path: Path) -> None:
    """A server answers many requests: once ready, it prepacks the model's matmul weights for the CPU's kernels
    (model/prepack.py), saying so after its "ready:" line; one-shot commands never do."""
    args = ["serve", "--model-path", str(NVEMBED_TINY), "--dtype", "bfloat16", "--port", str(free_port())]
    text = stderr_until(args, db, "prepacked", tmp_path / "e")
    layers = 2 * 7 + 2  # the fixture's 2 layers x q, k, v, o, gate, up, down, and the latent feed-forward's 2
    assert f"nvidia/NV-Embed-v2: {layers} matmul weights prepacked for this CPU's kernels in" in text, text
    assert text.index("ready:") < text.index("prepacked")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "alpha beta"}\n')
    built = nvrag(
        "index", str(corpus), "--index", "nv", "--model-path", str(NVEMBED_TINY), "--dtype", "bfloat16", db=db
    )
    assert built.returncode == 0 and "prepacked" not in built.stderr  # one-shot commands never prepack
    mcp = stderr_until(["mcp", "--index", "nv"], db, "prepacked", tmp_path / "mcp")  # the query model, once loaded
    assert f"nvidia/NV-Embed-v2: {layers} matmul weights prepacked" in mcp, mcp


@pytest.mark.skipif(not packed_int8_supported(), reason=NO_PACKED)
@pytest.mark.skipif(not INT8_DOT_CPU, reason=NO_INT8_DOT)
def test_serve_packs_an_int8_model_after_ready(db: Path, tmp_path: Path) -> None:
    """int8 layers are converted plain (a one-shot command's: no reorder to pay for); a server packs them for
    oneDNN once ready (model/int8.py), with the latent feed-forward's bfloat16 ones, and says so."""
    args = ["serve", "--model-path", str(NVEMBED_TINY), "--dtype", "int8", "--port", str(free_port())]
    text = stderr_until(args, db, "prepacked", tmp_path / "e")
    wanted = "nvidia/NV-Embed-v2: 14 int8 matmul weights and 2 bfloat16 ones prepacked for this CPU's kernels in"
    assert wanted in text, text
    assert text.index("ready:") < text.index("prepacked")
