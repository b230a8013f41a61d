"""The compiled few-rows kernel of the widened product (model/_widemm.c via model/widened.py): against the float64
product of the widened weights for every remainder its blocking has (input rows not a multiple of 3, output rows
not a multiple of 4 or of its 128-row blocks, input widths across and off its 1,024-column panels), bfloat16 and
int8 with scales, one thread or several (run by PyTorch's OpenMP threads, or by nvrag's own pool where a process
has no OpenMP runtime), concurrent callers, forked children; where it is and is not used; that a build on an AVX2
x86-64 machine has it (so a failed compile cannot hide behind the PyTorch fallback)."""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from nvrag.model import widened
from nvrag.model.widened import FEW_ROWS, kernel_available, kernel_product, uses_kernel, wide_product

needs_kernel = pytest.mark.skipif(not kernel_available(), reason="the compiled kernel needs x86-64 with AVX2")


def test_an_avx2_x86_machine_has_the_kernel_built() -> None:
    """setup.py builds the kernel wherever pip has a C compiler; this CI's machines do. A missing build would make
    every widened query silently 2x slower, so on x86-64 with AVX2 its absence fails here."""
    if platform.machine() not in ("x86_64", "AMD64") or torch.backends.cpu.get_cpu_capability() not in (
        "AVX2",
        "AVX512",
    ):
        pytest.skip("the kernel is built for x86-64 CPUs with AVX2")
    assert widened._widemm is not None, "nvrag.model._widemm was not built: reinstall with a C compiler (pip -e .)"
    assert kernel_available()


class WithoutOpenMP:
    """The compiled module as a process with no OpenMP runtime sees it: ``team`` declines (the real one returns
    False, computing nothing, where it finds no GOMP_parallel), so nvrag's own thread pool splits the columns."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def widemm(self, *args: int) -> None:
        self.real.widemm(*args)

    def team(self, *args: int) -> bool:
        return False


@pytest.fixture
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """``request.param``: (threads, "openmp" or "pool"): who runs the kernel's column slices."""
    count, runner = request.param
    if runner == "pool":
        monkeypatch.setattr(widened, "_widemm", WithoutOpenMP(widened._widemm))
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    yield count
    torch.set_num_threads(before)


def reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    out = x.double() @ weight.double().t()
    return out if scale is None else out * scale.double().reshape(1, -1)


@needs_kernel
@pytest.mark.parametrize("threads", [(1, "openmp"), (2, "openmp"), (3, "openmp"), (2, "pool")], indirect=True)
@pytest.mark.parametrize("kind", ["bfloat16", "int8"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 29, FEW_ROWS])
# (14,336, 301): an input of 29 or 64 rows that wide outgrows this CPU's L2, so the kernel takes the output's
# columns in blocks of 128 weight rows (the last one 45, not a multiple of the 4-row panel)
@pytest.mark.parametrize(
    ("in_features", "out_features"), [(8, 1), (16, 3), (1032, 13), (2056, 100), (4096, 8), (14336, 301)]
)
def test_the_kernel_is_the_product_of_the_widened_weights(
    threads: int, kind: str, rows: int, in_features: int, out_features: int
) -> None:
    g = torch.Generator().manual_seed(rows * 1000 + in_features + out_features)
    x = torch.randn(rows, in_features, generator=g)
    if kind == "bfloat16":
        weight, scale = torch.randn(out_features, in_features, generator=g).bfloat16(), None
    else:
        weight = torch.randint(-127, 128, (out_features, in_features), generator=g, dtype=torch.int8)
        scale = torch.rand(out_features, generator=g) / 100
    assert uses_kernel(rows, weight)
    got = kernel_product(x, weight, scale)
    want = reference(x, weight, scale)
    assert got.dtype == torch.float32 and got.shape == (rows, out_features)
    # float32 sums of in_features products, in another order than float64's: a few ulps of the largest partial sum
    bound = 1e-6 * (x.double().abs() @ weight.double().abs().t())
    if scale is not None:
        bound = bound * scale.double()
    assert ((got.double() - want).abs() <= 4 * bound + 1e-30).all()


@needs_kernel
def test_wide_product_gives_the_same_answer_with_and_without_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 264, generator=g)  # 10 rows in a batch shape
    weight = torch.randn(37, 264, generator=g).bfloat16()
    bias = torch.randn(37, generator=g)
    quantised = torch.randint(-127, 128, (37, 264), generator=g, dtype=torch.int8)
    scale = torch.rand(1, 37, generator=g) / 50
    with_kernel = wide_product(x, weight, bias), wide_product(x, quantised, bias, scale)
    monkeypatch.setattr(widened, "_widemm", None)
    assert not kernel_available() and not uses_kernel(10, weight)
    without = wide_product(x, weight, bias), wide_product(x, quantised, bias, scale)
    for a, b in zip(with_kernel, without, strict=True):
        assert a.shape == (2, 5, 37)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_the_kernel_is_used_only_where_it_applies() -> None:
    bf16 = torch.zeros(16, 64, dtype=torch.bfloat16)
    assert uses_kernel(1, bf16) and uses_kernel(FEW_ROWS, bf16)
    assert not uses_kernel(0, bf16) and not uses_kernel(FEW_ROWS + 1, bf16)  # many rows: MKL's blocked product
    assert not uses_kernel(4, torch.zeros(16, 60, dtype=torch.bfloat16))  # width not a multiple of 8
    assert not uses_kernel(4, torch.zeros(16, 64, dtype=torch.float16))  # a dtype it does not read
    assert not uses_kernel(4, torch.zeros(64, 16, dtype=torch.bfloat16).t())  # not row-major
    # and those still compute the right product, through PyTorch
    x = torch.randn(3, 60)
    odd = torch.randn(5, 60).bfloat16()
    torch.testing.assert_close(wide_product(x, odd), x @ odd.float().t(), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_the_raw_kernel_refuses_arguments_it_cannot_compute() -> None:
    assert widened._widemm is not None
    with pytest.raises(ValueError, match="unsupported"):
        widened._widemm.widemm(0, 1, 12, 12, 0, 0, 0, 0, 4, 0, 4, 0)  # 12 columns: not a multiple of 8
    with pytest.raises(ValueError, match="unsupported"):
        widened._widemm.widemm(0, 1, 8, 8, 0, 1, 0, 0, 4, 0, 4, 0)  # int8 without scales
    with pytest.raises(ValueError, match="unsupported"):
        widened._widemm.team(0, 2, 8, 8, 0, 0, 0, 4, 0, 4, 0, 47, 2)  # scratch slots under rows x (width + 16)
    with pytest.raises(ValueError, match="unsupported"):
        widened._widemm.team(0, 2, 8, 8, 0, 0, 0, 4, 0, 4, 0, 48, 0)  # no threads


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_the_kernel_runs_in_pytorchs_openmp_threads(threads: int) -> None:
    """PyTorch here has an OpenMP runtime: ``team`` runs the kernel in it (True) and every column is computed,
    whatever the team's size, 5 threads on 2 cores included."""
    assert widened._widemm is not None
    g = torch.Generator().manual_seed(threads)
    x, weight = torch.randn(7, 264, generator=g), torch.randn(45, 264, generator=g).bfloat16()
    out = torch.full((7, 45), float("nan"))
    stride = 7 * (264 + 16)
    scratch = torch.empty(threads, stride)
    ran = widened._widemm.team(
        x.data_ptr(), 7, 264, 264, weight.data_ptr(), 0, 0, 45, out.data_ptr(), 45, scratch.data_ptr(), stride, threads
    )
    assert ran is True
    torch.testing.assert_close(out, x @ weight.float().t(), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_concurrent_callers_each_get_their_own_product() -> None:
    """Server threads share the kernel's thread pool: each call's result is its own."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(300, 512, generator=g).bfloat16()
    inputs = [torch.randn(7, 512, generator=g) for _ in range(8)]
    results: list[torch.Tensor | None] = [None] * len(inputs)

    def run(i: int) -> None:
        for _ in range(5):
            results[i] = wide_product(inputs[i], weight)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for x, got in zip(inputs, results, strict=True):
        assert got is not None
        torch.testing.assert_close(got, x @ weight.float().t(), rtol=1e-5, atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("threads", [(2, "openmp"), (2, "pool")], indirect=True)
def test_a_forked_child_computes_with_its_own_threads(threads: int) -> None:
    """A process forked after the kernel's threads started (multiprocessing's default on Linux) computes in a
    pool of its own: the parent's would take the task and never run it, and the parent's OpenMP team would wait
    forever for threads that did not come along."""
    import os
    import signal
    import time

    g = torch.Generator().manual_seed(5)
    weight = torch.randn(64, 256, generator=g).bfloat16()
    x = torch.randn(5, 256, generator=g)
    want = wide_product(x, weight)  # the parent's threads are now started
    assert widened._pools or not isinstance(widened._widemm, WithoutOpenMP)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 if it computed the parent's answer
        ok = False
        try:
            ok = torch.equal(wide_product(x, weight), want)
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 120  # a generous guard: the child takes milliseconds, or forever
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child never finished its product (the parent's thread pool)")
    assert os.waitstatus_to_exitcode(done[1]) == 0
