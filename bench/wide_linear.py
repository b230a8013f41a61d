"""bfloat16 weights on a CPU without bfloat16 arithmetic: PyTorch's emulated bfloat16 matmul against float32 and
against nvrag's widened layer (model/widened.py: the weight kept in bfloat16, widened to float32 a block of rows at
a time), for NV-Embed-v2's decoder shapes:

    python bench/wide_linear.py [--rows 32 512 2048] [--threads 2] [--repeats 3]

For each shape (Mistral-7B's q and o 4,096 -> 4,096, k and v 4,096 -> 1,024, gate and up 4,096 -> 14,336, down
14,336 -> 4,096) and row count: milliseconds per call (best of --repeats after one warm-up) of
``F.linear`` in bfloat16 (what nvrag ran before on such a CPU), in float32 (weights twice the size: NV-Embed-v2's
would not fit in 24 GiB), and widened; then each as a share of this CPU's float32 matmul peak, measured in the
same run on a 2,048-square product. A layer-weighted total (a decoder layer has one of each, gate and up twice)
gives the whole model's ratio. Prints the CPU's bfloat16 flags: on a CPU with AVX-512 BF16 or AMX nvrag
computes bfloat16 natively and never widens.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from nvrag.embedder.dtypes import cpu_flags, native_bf16
from nvrag.model.widened import WideLinear

# (in, out, how many of it a decoder layer has)
SHAPES = ((4096, 4096, 2), (4096, 1024, 2), (4096, 14336, 2), (14336, 4096, 1))


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    with torch.inference_mode():
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 512, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "avx_vnni")))
    native = native_bf16()
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {capability}, {args.threads} threads")
    print(f"flags: {' '.join(flags) or 'none'}; native bfloat16: {native or 'no (nvrag widens)'}")
    square = torch.randn(2048, 2048)
    peak = 2 * 2048**3 / best_ms(lambda: square @ square, 5) / 1e6  # GFLOP/s
    print(f"float32 matmul peak (2,048 square): {peak:.0f} GFLOP/s\n")
    print(
        "| rows | in -> out | bfloat16 ms | float32 ms | widened ms | widened / float32 | bfloat16 / widened "
        "| widened share of peak |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    g = torch.Generator().manual_seed(0)
    for rows in args.rows:
        totals = [0.0, 0.0, 0.0]
        flops_total = 0.0
        for k, n, count in SHAPES:
            weight = (torch.randn(n, k, generator=g) / 64).bfloat16()
            layer = torch.nn.Linear(k, n, bias=False)
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
            wide = WideLinear(layer)
            wide32 = weight.float()
            x = torch.randn(rows, k, generator=g)
            x16 = x.bfloat16()
            times = (
                best_ms(lambda x16=x16, w=weight: F.linear(x16, w), args.repeats),
                best_ms(lambda x=x, w=wide32: F.linear(x, w), args.repeats),
                best_ms(lambda x=x, layer=wide: layer(x), args.repeats),
            )
            flops = 2.0 * rows * k * n
            share = flops / times[2] / 1e6 / peak
            print(
                f"| {rows} | {k} -> {n} | {times[0]:.1f} | {times[1]:.1f} | {times[2]:.1f} | "
                f"{times[2] / times[1]:.2f}x | {times[0] / times[2]:.2f}x | {share:.0%} |"
            )
            totals = [t + count * m for t, m in zip(totals, times, strict=True)]
            flops_total += count * flops
        share = flops_total / totals[2] / 1e6 / peak
        print(
            f"| {rows} | a decoder layer | {totals[0]:.1f} | {totals[1]:.1f} | {totals[2]:.1f} | "
            f"{totals[2] / totals[1]:.2f}x | {totals[0] / totals[2]:.2f}x | {share:.0%} |"
        )


if __name__ == "__main__":
    main()
