"""How many compute threads a server's next forward pass should use: its CPUs, less what other processes use.

A forward pass on the CPU is hundreds of short parallel regions. Between two of them a compute thread either
spins (and the next region starts at once) or sleeps (and waking it costs): NV-Embed-v2's one-line query took
0.64 s with threads that spin briefly and 0.78 s with threads that sleep at once (this project's 2-core VM).
But a thread that spins while another process wants its CPU takes that CPU from it, and a parallel region
then waits for whichever of its threads the scheduler has put aside: beside one busy process the bundled
model served half the queries it served with sleeping threads (docs/performance.md, "Beside a busy process").

So a server lets its threads spin briefly, and before each pass ``CpuShare.threads`` says how many to use:
the CPUs it may run on less the CPUs other processes kept busy over the last half second or more (``/proc/stat``
per CPU, less this process's own time from ``/proc/self/stat``; time the hypervisor stole counts as busy).
Beside a busy process it runs on one thread fewer per CPU taken, so none of its threads waits for a CPU and
none spins on one another process needs; on a quiet machine it uses every CPU. Two servers on one machine
each see the other and settle on their share. Where ``/proc`` cannot be read it keeps every thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

WINDOW_SECONDS = 0.5  # the shortest span measured: /proc counts in ticks of 10 ms
HYSTERESIS = 0.6  # change the count only when the free CPUs moved this far from it


def busy_ticks(stat: str, cpus: Collection[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of the given CPUs since boot, from the text of /proc/stat. Busy is user, nice,
    system, irq, softirq and steal (guest time is already inside user); idle and iowait are not."""
    busy = total = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        fields = [int(x) for x in rest.split()[:8]]
        fields += [0] * (8 - len(fields))
        user, nice, system, idle, iowait, irq, softirq, steal = fields
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
    return busy, total


def own_ticks(self_stat: str) -> int:
    """This process's user + system clock ticks, from the text of /proc/self/stat (its name may hold spaces and
    parentheses: the fields are counted after the last ')')."""
    fields = self_stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of the whole line


class CpuShare:
    """The compute threads for the next pass, between 1 and ``max_threads``; see the module. Thread-safe: the
    workers of every served model ask the one instance."""

    def __init__(
        self,
        max_threads: int,
        cpus: Collection[int],
        *,
        proc: Path = Path("/proc"),
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_threads = max(1, max_threads)
        self.cpus = frozenset(cpus)
        self.proc, self.window, self.clock = proc, window, clock
        self._lock = threading.Lock()
        self._threads = self.max_threads
        self._last: tuple[float, int, int, int] | None = None  # (time, busy, total, own) at the last sample
        self._broken = False
        self._sample()

    @property
    def measurable(self) -> bool:
        """Whether /proc could be read (where not, ``threads`` is always ``max_threads``)."""
        return not self._broken

    def _sample(self) -> tuple[float, int, int, int] | None:
        try:
            busy, total = busy_ticks((self.proc / "stat").read_text(encoding="ascii"), self.cpus)
            own = own_ticks((self.proc / "self" / "stat").read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError, IndexError):
            self._broken = True  # no /proc here, or one we cannot read: keep every thread
            return None
        if total == 0:
            self._broken = True
            return None
        sample = (self.clock(), busy, total, own)
        if self._last is None:
            self._last = sample
        return sample

    def _others(self, now: tuple[float, int, int, int]) -> float:
        """CPUs other processes kept busy between the last sample and ``now``."""
        assert self._last is not None
        _, busy0, total0, own0 = self._last
        _, busy1, total1, own1 = now
        elapsed = (total1 - total0) / len(self.cpus)  # ticks of one CPU
        if elapsed <= 0:
            return 0.0
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / elapsed

    def threads(self) -> int:
        """How many compute threads to use now (re-measured at most once a window)."""
        with self._lock:
            if self._broken or self._last is None or self.clock() - self._last[0] < self.window:
                return self._threads
            now = self._sample()
            if now is None:
                return self._threads
            free = len(self.cpus) - self._others(now)
            self._last = now
            if abs(free - self._threads) > HYSTERESIS:
                self._threads = min(self.max_threads, max(1, math.floor(free + 0.5)))
            return self._threads
