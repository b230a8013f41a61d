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

At up to 64 rows the widened layer runs nvrag's compiled kernel where it was built (model/_widemm.c: AVX2 and
FMA); the "via PyTorch" columns time the same layer with the kernel switched off (the widening copy, then MKL).

Also the same layer with int8 weights and a scale per output channel, widened the same way (``--dtype int8`` on a
CPU without int8 dot products, model/int8.quantize(wide=True)), and with ``--int-mm`` PyTorch's int8 product
with quantised inputs (``torch._int_mm``, what int8 would run without widening; slow there: minutes at 2,048 rows).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from nvrag.embedder.dtypes import cpu_flags, int8_dot_products, native_bf16
from nvrag.model import widened
from nvrag.model.int8 import quantize_rows, quantize_weight
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


@contextlib.contextmanager
def torch_only() -> Iterator[None]:
    """The widened layers computed through PyTorch (the compiled kernel switched off) inside the block."""
    kernel, widened._widemm = widened._widemm, None
    try:
        yield
    finally:
        widened._widemm = kernel


def timed_both(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """``fn``'s time as nvrag runs it, then through PyTorch only."""
    mine = best_ms(fn, repeats)
    with torch_only():
        return mine, best_ms(fn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 512, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--int-mm", action="store_true", help="also time torch._int_mm (int8 inputs and weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "avx_vnni")))
    native = native_bf16()
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {capability}, {args.threads} threads")
    print(f"flags: {' '.join(flags) or 'none'}; native bfloat16: {native or 'no (nvrag widens)'}")
    print(f"int8 dot products: {'yes' if int8_dot_products() else 'no (nvrag widens int8 weights)'}")
    square = torch.randn(2048, 2048)
    peak = 2 * 2048**3 / best_ms(lambda: square @ square, 5) / 1e6  # GFLOP/s
    print(f"float32 matmul peak (2,048 square): {peak:.0f} GFLOP/s")
    print(f"compiled few-rows kernel: {'yes' if widened.kernel_available() else 'no (not built, or no AVX2)'}\n")
    print(
        "| rows | in -> out | bfloat16 ms | float32 ms | widened ms | via PyTorch ms | widened / float32 "
        "| bfloat16 / widened | widened share of peak | widened int8 ms | int8 via PyTorch ms | int8 / widened "
        "| torch._int_mm ms |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    g = torch.Generator().manual_seed(0)
    for rows in args.rows:
        totals = [0.0] * 7
        flops_total = 0.0
        for k, n, count in SHAPES:
            weight = (torch.randn(n, k, generator=g) / 64).bfloat16()
            layer = torch.nn.Linear(k, n, bias=False)
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
            wide = WideLinear(layer)
            wide32 = weight.float()
            x = torch.randn(rows, k, generator=g)
            x16 = x.bfloat16()
            quantised, scale = quantize_weight(weight)
            int8 = WideLinear(layer, quantised, scale)
            int_mm = float("nan")
            if args.int_mm:
                int_mm = best_ms(lambda x=x, q=quantised: torch._int_mm(quantize_rows(x)[0], q.t()), args.repeats)
            times = (
                best_ms(lambda x16=x16, w=weight: F.linear(x16, w), args.repeats),
                best_ms(lambda x=x, w=wide32: F.linear(x, w), args.repeats),
                *timed_both(lambda x=x, layer=wide: layer(x), args.repeats),
                *timed_both(lambda x=x, layer=int8: layer(x), args.repeats),
                int_mm,
            )
            flops = 2.0 * rows * k * n
            print(row(rows, f"{k} -> {n}", times, flops / times[2] / 1e6 / peak))
            totals = [t + count * m for t, m in zip(totals, times, strict=True)]
            flops_total += count * flops
        print(row(rows, "a decoder layer", totals, flops_total / totals[2] / 1e6 / peak))


def row(rows: int, shape: str, times: list[float] | tuple[float, ...], share: float) -> str:
    bf16, fp32, wide, wide_torch, int8, int8_torch, int_mm = times
    return (
        f"| {rows} | {shape} | {bf16:.1f} | {fp32:.1f} | {wide:.1f} | {wide_torch:.1f} | {wide / fp32:.2f}x "
        f"| {bf16 / wide:.2f}x | {share:.0%} | {int8:.1f} | {int8_torch:.1f} | {int8 / wide:.2f}x | {int_mm:.1f} |"
    )


if __name__ == "__main__":
    main()
