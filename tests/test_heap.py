"""The C heap's policy (nvrag/heap.py): large freed blocks are reused rather than mapped afresh, from any thread,
in every CLI process; trimming hands freed pages back. Counted in the kernel's page faults, in fresh processes
(the policy must be set before threads allocate)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nvrag.heap import trim_heap, tuned_by_environment

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc, /proc/self/status")

# faults taken by a second 128 MiB block after the first was freed, in the main thread and in a new thread
SECOND_BLOCK = """
import resource, threading
def faults_of_a_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(128 << 20)  # zero-filled: every page touched
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_block()
found = {"main": faults_of_a_block()}
def in_a_thread():
    faults_of_a_block()
    found["thread"] = faults_of_a_block()
thread = threading.Thread(target=in_a_thread)
thread.start()
thread.join()
print(found["main"], found["thread"])
"""
PAGES = (128 << 20) // 4096


def faults(prelude: str, after: str = "") -> tuple[int, int]:
    code = f"{prelude}\n{SECOND_BLOCK}\n{after}"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    main, thread = run.stdout.split()[-2:]
    return int(main), int(thread)


def test_large_freed_blocks_are_reused_from_any_thread() -> None:
    main, thread = faults("import os\nfrom nvrag.heap import reuse_freed_blocks\nassert reuse_freed_blocks(os.environ)")
    assert main < PAGES // 10 and thread < PAGES // 10, (main, thread)
    # glibc's own policy maps every such block afresh: each one faults in all its pages again
    assert min(faults("")) > PAGES // 2


def test_a_process_that_tunes_malloc_itself_keeps_its_settings() -> None:
    assert tuned_by_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert tuned_by_environment({"MALLOC_ARENA_MAX": "4"})
    assert tuned_by_environment({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert not tuned_by_environment({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2", "PATH": "/usr/bin"})
    prelude = "import os\nos.environ['MALLOC_ARENA_MAX'] = '2'\nfrom nvrag.heap import reuse_freed_blocks\n"
    prelude += "assert not reuse_freed_blocks(os.environ)"
    assert min(faults(prelude)) > PAGES // 2  # glibc's own policy, as the user chose


def test_every_cli_process_reuses_them() -> None:
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: exec({SECOND_BLOCK!r}, {{}}))\n"
        "sys.argv = ['nvrag', '--version']\n"
        "from nvrag.app.cli import main\n"
        "main()"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.startswith("nvrag "), run.stderr
    main, thread = (int(n) for n in run.stdout.split()[-2:])
    assert main < PAGES // 10 and thread < PAGES // 10, (main, thread)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_trimming_hands_freed_heap_pages_back() -> None:
    # 64 KiB blocks sit in the heap (under glibc's mmap threshold); every 16th kept, so the heap cannot shrink
    # from its top: only a trim gives the freed ones back
    blocks = [torch.ones(1 << 14) for _ in range(4096)]  # 256 MiB
    kept = blocks[::16]
    before = rss_kib()
    del blocks
    assert trim_heap()
    after = rss_kib()
    assert before - after >= 128 * 1024, (before, after)
    assert all(float(b[0]) == 1.0 for b in kept)
