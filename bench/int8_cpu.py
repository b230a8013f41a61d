"""int8 on the CPU (``--dtype int8``) against bfloat16 and float32, in one run:

    python bench/int8_cpu.py [--threads 2] [--skip-eval]

1. One matmul layer at NV-Embed-v2's shapes (4,096 in; 4,096 and 14,336 out) for a query's 32 rows and a
   document batch's 512: float32 (``F.linear``), bfloat16 prepacked for oneDNN (what a server runs) and int8
   (model/int8.py: the input quantised per row, oneDNN's prepacked int8 matmul, scaled back: a server's layers)
   and int8 plain (``torch._int_mm`` on the weight as quantised: a one-shot command's), ms and GOP/s.
2. The bundled all-MiniLM-L6-v2 embedding 512 NFCorpus documents (title + text, 256-token cap) in each dtype:
   documents/s of the forward passes (the model loaded and warmed first), and the cosine of each vector to
   float32's (minimum and mean).
3. Quality: ``nvrag eval`` on NFCorpus with the bundled model in float32 and in int8 (two whole processes),
   nDCG@10 and Recall@100 of each.

Prints Markdown for docs/performance.md. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from cpu_embed import documents

REPO = Path(__file__).resolve().parent.parent
NFCORPUS = REPO.parent / "shared" / "data" / "nfcorpus"


def timed(call: Callable[[], object], n: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def layer_row(rows: int, n_out: int) -> str:
    from nvrag.model.int8 import Int8Linear

    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(4096, n_out, bias=False)
    with torch.no_grad():
        linear.weight.normal_(0, 0.02, generator=g)
    x = torch.randn(rows, 4096, generator=g)
    w16 = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().bfloat16(), 64)
    x16 = x.bfloat16()
    plain = Int8Linear(linear)  # a one-shot command's layer
    int8 = plain.packed_copy()  # a server's, once ready
    flops = 2 * rows * 4096 * n_out
    n = 20 if rows == 32 else 4
    with torch.inference_mode():
        t32 = timed(lambda: linear(x), n)
        t16 = timed(lambda: torch.ops.mkldnn._linear_pointwise(x16, w16, None, "none", [], ""), n)
        t8 = timed(lambda: int8(x), n)
        t8plain = timed(lambda: plain(x), n)
        exact = linear(x)
        error = float((int8(x) - exact).norm() / exact.norm())
    cells = [f"{1000 * t:.2f} ({flops / t / 1e9:.0f})" for t in (t32, t16, t8, t8plain)]
    return f"| {rows} x 4096 -> {n_out} | {' | '.join(cells)} | {error:.4f} |"


def layers() -> None:
    head = "| rows x in -> out | float32 ms (GOP/s) | bfloat16 prepacked ms (GOP/s) | int8 prepacked ms (GOP/s) "
    head += "| int8 plain ms (GOP/s) | int8 error |"
    print(f"\n{head}\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for rows, n_out in ((32, 4096), (32, 14336), (512, 4096), (512, 14336)):
        print(layer_row(rows, n_out), flush=True)


def bundled(texts: list[str]) -> None:
    from nvrag.embedder import LoadOptions, load_embedder

    print("\n| all-MiniLM-L6-v2, 512 documents | documents/s | cosine to float32: min / mean |")
    print("| --- | ---: | --- |")
    reference = None
    for dtype in ("float32", "bfloat16", "int8"):
        model = load_embedder("all-MiniLM-L6-v2", LoadOptions(dtype=dtype, max_length=256))
        model.embed_documents(texts[:16])  # loaded and warm
        start = time.perf_counter()
        vectors = model.embed_documents(texts)
        seconds = time.perf_counter() - start
        reference = vectors if reference is None else reference
        cos = (vectors * reference).sum(1)
        print(f"| {dtype} | {len(texts) / seconds:.1f} | {cos.min():.4f} / {cos.mean():.4f} |", flush=True)


def quality() -> None:
    print("\n| `nvrag eval` NFCorpus, all-MiniLM-L6-v2 | nDCG@10 | Recall@100 | process wall s |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="nvrag-int8-eval-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
        env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(Path(tmp) / "db"))
        for dtype in ("float32", "int8"):
            command = [sys.executable, "-m", "nvrag", "eval", str(NFCORPUS), "--model", "all-MiniLM-L6-v2",
                       "--dtype", dtype, "--index", f"nfcorpus-{dtype}", "--json"]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - start
            metrics = json.loads(done.stdout)["metrics"]
            print(f"| {dtype} | {metrics['nDCG@10']:.4f} | {metrics['Recall@100']:.4f} | {wall:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads")  # fmt: skip
    layers()
    bundled(documents(512))
    if not args.skip_eval:
        quality()


if __name__ == "__main__":
    main()
