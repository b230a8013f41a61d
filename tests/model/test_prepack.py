"""Matmul weights prepacked for the CPU's kernels (nvrag/model/prepack.py): the same vectors as the plain
weights, bit for bit; memory flat when the plain weights were views of the mapped checkpoint; nothing done in
float32; passes running while the weights are swapped still right."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from nvrag.model import NVEmbedModel, load_model, tiny_config
from nvrag.model.prepack import PackedLinear, prepack, prepack_supported
from tests.model.test_residency import mapping_of

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from realshape import write_checkpoint  # noqa: E402

pytestmark = pytest.mark.skipif(not prepack_supported(), reason="this PyTorch cannot prepack bf16 weights")


def random_model(dtype: torch.dtype) -> NVEmbedModel:
    torch.manual_seed(0)
    model = NVEmbedModel(tiny_config())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.to(dtype).eval().prepare()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 32000, (3, 21), generator=g)
    mask = torch.ones(3, 21, dtype=torch.long)
    mask[1, 9:] = 0
    pool = mask.clone()
    pool[:, :3] = 0
    return ids, mask, pool


def test_packed_weights_give_the_same_vectors_bit_for_bit() -> None:
    model = random_model(torch.bfloat16)
    with torch.inference_mode():
        plain = {b: model(*batch(), backend=b, folded=True) for b in ("eager", "sdpa", "varlen")}
    layers, _ = prepack(model.backbone)
    linears = tiny_config().text.num_hidden_layers * 7  # q, k, v, o, gate, up, down
    assert layers == linears
    assert sum(isinstance(m, PackedLinear) for m in model.backbone.modules()) == linears
    assert not any(type(m) is nn.Linear for m in model.backbone.modules())
    with torch.inference_mode():
        for backend, want in plain.items():
            assert torch.equal(model(*batch(), backend=backend, folded=True), want), backend  # type: ignore[arg-type]
    assert prepack(model.backbone)[0] == 0  # nothing left to pack


def test_float32_weights_are_left_alone() -> None:
    model = random_model(torch.float32)
    assert prepack(model.backbone)[0] == 0
    assert not any(isinstance(m, PackedLinear) for m in model.modules())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps")
def test_weights_mapped_from_the_checkpoint_leave_memory_once_packed(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "small", "small", dtype=torch.bfloat16, shards=1)
    model = load_model(tmp_path / "small", dtype=torch.bfloat16)  # stored in bf16: views of the mapped shard
    weight = model.backbone.layers[0].mlp.gate.weight
    _, size, before = mapping_of(weight.data_ptr())
    linear_kib = sum(m.weight.numel() * 2 for m in model.backbone.modules() if type(m) is nn.Linear) // 1024
    with torch.inference_mode():
        plain = model(*batch(), backend="sdpa")
    prepack(model.backbone)
    _, _, after = mapping_of(weight.data_ptr())
    assert before >= 0.9 * size  # resident after loading (residency.populate)
    assert before - after >= 0.9 * linear_kib  # the packed layers' plain weights are no longer this process's
    with torch.inference_mode():
        assert torch.equal(model(*batch(), backend="sdpa"), plain)  # the dropped pages were never needed again


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset the peak")
def test_weights_of_the_process_own_are_freed_as_each_is_packed() -> None:
    """Weights not mapped from a file (a float32 checkpoint loaded in bfloat16, say) are freed one by one as
    their packed copies take their place: 12 of 32 MiB, the peak while packing within a few of them."""
    import gc

    from tests.model.test_int8 import status_bytes

    model = nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(12)]).to(torch.bfloat16)
    model.requires_grad_(False)
    gc.collect()
    before = status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    assert prepack(model)[0] == 12
    assert status_bytes("VmHWM") - before < 4 * 32 * 2**20


def test_passes_running_while_the_weights_are_swapped_are_right() -> None:
    model = random_model(torch.bfloat16)
    with torch.inference_mode():
        want = model(*batch(), backend="sdpa")
    seen: list[bool] = []
    go = threading.Event()

    def serve() -> None:
        go.wait()
        with torch.inference_mode():
            for _ in range(30):
                seen.append(torch.equal(model(*batch(), backend="sdpa"), want))

    thread = threading.Thread(target=serve)
    thread.start()
    go.set()
    prepack(model.backbone)
    thread.join()
    assert seen == [True] * 30


def test_packing_waits_while_requests_run_but_never_starves() -> None:
    model = random_model(torch.bfloat16)
    answers = iter([True] * 5)
    asked = 0

    def busy() -> bool:  # requests running for the first 5 looks, then idle
        nonlocal asked
        asked += 1
        return next(answers, False)

    layers, _ = prepack(model.backbone, busy=busy)
    assert layers == 14 and asked == 5 + 14  # it looked before every layer, and waited out the busy spell
    always = random_model(torch.bfloat16)
    assert prepack(always.backbone, busy=lambda: True, max_wait=0.001)[0] == 14  # a busy server still gets packed


def test_a_work_queue_is_busy_while_a_pass_runs_or_rows_wait() -> None:
    from nvrag.embedder.work_queue import WorkQueue

    release = threading.Event()

    def forward(rows: list[int], key: object) -> list[int]:
        release.wait()
        return rows

    queue: WorkQueue[int, list[int]] = WorkQueue("t", [forward], batch_tokens=64, max_batch_size=8)
    assert not queue.busy
    done = threading.Thread(target=queue.submit, args=("k", [1, 2], [1, 1], False, [0, 0]))
    done.start()
    for _ in range(500):
        if queue.busy:
            break
        threading.Event().wait(0.01)
    assert queue.busy
    release.set()
    done.join()
    for _ in range(500):  # the worker books the pass just after answering
        if not queue.busy:
            break
        threading.Event().wait(0.01)
    assert not queue.busy


def test_the_bundled_model_prepared_for_serving_gives_the_same_vectors_bit_for_bit() -> None:
    """Its Dense layers (GELU fused, float32 inputs cast to bfloat16) are packed too: every one of the six
    layers' q, k, v, attention output, up (with the GELU) and down."""
    from nvrag.embedder import LoadOptions, load_embedder
    from nvrag.model.dense import Dense

    embedder = load_embedder("all-MiniLM-L6-v2", LoadOptions(dtype="bfloat16"))
    texts = ["a short query", "a longer passage about hashing files and running shell commands " * 6, ""]
    plain_documents, plain_queries = embedder.embed_documents(texts), embedder.embed_queries(texts[:1])
    line = embedder.prepare_for_serving()
    assert line is not None and line.startswith("all-MiniLM-L6-v2: 36 matmul weights prepacked")
    model = embedder.model  # type: ignore[attr-defined]
    assert not any(isinstance(m, Dense) for m in model.modules())
    gelus = [m for m in model.modules() if isinstance(m, PackedLinear) and m.post_op[0] == "gelu"]
    assert len(gelus) == 6
    assert (embedder.embed_documents(texts) == plain_documents).all()
    assert (embedder.embed_queries(texts[:1]) == plain_queries).all()


def test_a_query_only_load_packs_only_what_runs_on_pytorch() -> None:
    """A float32 query-only load sends its small batches to NumPy: nothing to pack, and its PyTorch model is not
    loaded for it. A bfloat16 one computes its queries in PyTorch, so they run on packed weights, bit for bit."""
    from nvrag.embedder import LoadOptions, load_embedder

    exact = load_embedder("all-MiniLM-L6-v2", LoadOptions(dtype="float32", for_queries=True))
    assert exact.prepare_for_serving() is None and exact._model is None  # type: ignore[attr-defined]
    queries = load_embedder("all-MiniLM-L6-v2", LoadOptions(dtype="bfloat16", for_queries=True))
    plain = queries.embed_queries(["a short query"])
    line = queries.prepare_for_serving()
    assert line is not None and line.startswith("all-MiniLM-L6-v2: 36 matmul weights prepacked")
    assert (queries.embed_queries(["a short query"]) == plain).all()
