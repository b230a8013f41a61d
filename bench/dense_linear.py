"""oneDNN's fused linear against ``F.linear`` (then the GELU as a second pass) for the bundled model's shapes,
the choice ``nvrag.model.dense.onednn_linear`` makes per CPU:

    python bench/dense_linear.py [--rows 4096] [--threads 2]

For each dtype oneDNN computes correctly here (``onednn_agrees``), each of BERT's three matmul shapes
(all-MiniLM-L6-v2: 384 -> 1,536 with the GELU, 1,536 -> 384, 384 -> 384) at --rows rows: GFLOP/s of each way
(best of 10 after 3 warm-ups) and oneDNN's ratio to F.linear. Prints torch's CPU capability (AVX2, AVX512)
and what ``onednn_linear`` chose.
"""

from __future__ import annotations

import argparse
import time

import torch

from nvrag.model.dense import linear, onednn_agrees, onednn_linear

SHAPES = ((384, 1536, "gelu"), (1536, 384, "none"), (384, 384, "none"))


def gflops(fn: object, flops: float) -> float:
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            fn()  # type: ignore[operator]
        for _ in range(10):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {capability}, {args.threads} threads, {args.rows} rows\n")
    print("| dtype | in -> out | activation | F.linear GFLOP/s | oneDNN GFLOP/s | oneDNN / F.linear | used |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        if not onednn_agrees(dtype):
            print(f"| {dtype} | - | - | - | - | oneDNN has no kernel here | F.linear |")
            continue
        used = "oneDNN" if onednn_linear(dtype) else "F.linear"
        for k, n, activation in SHAPES:
            x = torch.randn(args.rows, k, generator=g).to(dtype)
            w, b = (torch.randn(n, k, generator=g) / 20).to(dtype), torch.randn(n, generator=g).to(dtype)
            flops = 2.0 * args.rows * k * n
            plain = gflops(lambda x=x, w=w, b=b, a=activation: linear(x, w, b, a, onednn=False), flops)
            fused = gflops(lambda x=x, w=w, b=b, a=activation: linear(x, w, b, a, onednn=True), flops)
            row = f"| {dtype} | {k} -> {n} | {activation} | {plain:.1f} | {fused:.1f} | {fused / plain:.2f}x | {used} |"
            print(row)


if __name__ == "__main__":
    main()
