"""A server's compute threads fitted to the CPUs other processes leave free (nvrag/cpus.py): /proc's counters
parsed by hand-written examples, the decision driven by a fake /proc and clock, and once on the real /proc
beside real busy processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from nvrag.app.devices import fit_threads
from nvrag.cpus import CpuShare, busy_ticks, own_ticks

STAT = """cpu  30 0 10 100 5 0 0 0 0 0
cpu0 10 1 2 50 3 1 1 2 7 0
cpu1 20 0 8 50 2 0 0 0 0 0
cpu10 5 0 0 5 0 0 0 0 0 0
intr 1 2 3
"""


def test_busy_ticks_count_the_given_cpus_and_steal_as_busy() -> None:
    # cpu0: busy 10+1+2+1+1+2 = 17 (guest's 7 is inside user), total 17 + 50 + 3 = 70
    assert busy_ticks(STAT, {0}) == (17, 70)
    assert busy_ticks(STAT, {0, 1}) == (17 + 28, 70 + 80)
    assert busy_ticks(STAT, {10}) == (5, 10)  # cpu10, not cpu1 twice
    assert busy_ticks(STAT, {7}) == (0, 0)


def test_own_ticks_read_past_a_name_with_spaces_and_parentheses() -> None:
    fields = ["S", *["0"] * 10, "123", "45", *["0"] * 30]  # state is field 3, utime 14, stime 15
    assert own_ticks(f"4242 (nvrag ) (x) {' '.join(fields)}") == 168


class FakeProc:
    """A /proc whose counters the test moves: two CPUs, this process and the others' ticks."""

    def __init__(self, root: Path) -> None:
        self.root, self.now = root, 0.0
        self.idle = [1000, 1000]  # since boot
        self.others = [0, 0]
        self.own = 0
        (root / "self").mkdir()
        self.write()

    def write(self) -> None:
        own_split = [self.own // 2, self.own - self.own // 2]
        lines = [f"cpu{i} {self.others[i] + own_split[i]} 0 0 {self.idle[i]} 0 0 0 0 0 0" for i in range(2)]
        (self.root / "stat").write_text("cpu  0 0 0 0\n" + "\n".join(lines) + "\n")
        fields = ["S", *["0"] * 10, str(self.own), "0", *["0"] * 30]
        (self.root / "self" / "stat").write_text(f"1 (python) {' '.join(fields)}")

    def run(self, seconds: float, own_cpus: float, other_cpus: float) -> None:
        """``seconds`` pass (100 ticks each), this process keeping ``own_cpus`` busy and others ``other_cpus``."""
        ticks = round(seconds * 100)
        own, others = round(own_cpus * ticks), round(other_cpus * ticks)
        self.own += own
        for i in range(2):
            self.others[i] += others // 2
            self.idle[i] += ticks - own // 2 - others // 2
        self.now += seconds
        self.write()


def test_threads_follow_what_other_processes_leave_free(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    share = CpuShare(2, {0, 1}, proc=tmp_path, clock=lambda: proc.now)
    assert share.measurable and share.threads() == 2
    proc.run(1.0, own_cpus=2.0, other_cpus=0.0)  # this server alone, both CPUs at work
    assert share.threads() == 2
    proc.run(1.0, own_cpus=1.5, other_cpus=0.5)  # a neighbour took half a CPU: 1.5 free, not far from 2
    assert share.threads() == 2
    proc.run(1.0, own_cpus=1.0, other_cpus=1.0)  # a busy neighbour: one CPU free
    assert share.threads() == 1
    proc.run(0.2, own_cpus=0.0, other_cpus=0.0)  # shorter than the window: not measured yet
    assert share.threads() == 1
    proc.run(1.0, own_cpus=0.5, other_cpus=0.5)  # 1.5 free: not far enough from 1 to change
    assert share.threads() == 1
    proc.run(1.0, own_cpus=1.0, other_cpus=0.0)  # the neighbour ended
    assert share.threads() == 2
    proc.run(1.0, own_cpus=0.0, other_cpus=2.0)  # every CPU taken: still one thread, never none
    assert share.threads() == 1


def test_a_proc_it_cannot_read_keeps_every_thread(tmp_path: Path) -> None:
    share = CpuShare(4, {0, 1, 2, 3}, proc=tmp_path / "missing", clock=lambda: 10.0)
    assert not share.measurable and share.threads() == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_beside_real_busy_processes_it_runs_on_one_thread() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    share = CpuShare(len(cpus) + 1, cpus, window=0.3)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in cpus]  # one per CPU
    try:
        time.sleep(0.5)
        share.threads()  # measures from here
        time.sleep(1.0)
        assert share.threads() == 1
    finally:
        for process in busy:
            process.kill()
            process.wait()


def test_fit_threads_sets_the_count_of_the_thread_that_runs_the_passes() -> None:
    class One:
        def threads(self) -> int:
            return 1

    seen: list[int] = []

    def worker() -> None:
        fit_threads(One())()  # type: ignore[arg-type]
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [1]
