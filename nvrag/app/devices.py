"""Which devices there are: whether CUDA is available (without importing torch where it cannot be) and the
``--devices`` option."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from nvrag.cpus import CpuShare
from nvrag.errors import ConfigError

__all__ = [
    "cuda_available",
    "fit_threads",
    "nvidia_driver_possible",
    "parse_devices",
    "share_cpus",
    "usable_cpus",
]

SPIN_COUNT = 100_000  # libgomp's spins before an idle thread sleeps (about 5 ms of spinning on this project's VM)


def cuda_available() -> bool:
    """torch's answer, but False without importing torch (1.5 s) where there is certainly no NVIDIA driver."""
    if "torch" not in sys.modules and not nvidia_driver_possible():
        return False  # no NVIDIA driver: no CUDA either, and no 1.5 s `import torch` to find that out
    import torch

    return bool(torch.cuda.is_available())


def nvidia_driver_possible() -> bool:
    """False only where there is certainly no NVIDIA GPU: Linux with neither the driver's /proc entry nor a
    /dev/nvidia* device (containers given a GPU have both). Elsewhere torch decides."""
    if not sys.platform.startswith("linux"):
        return True
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def parse_devices(spec: str | None) -> tuple[str, ...]:
    """``--devices``: "cuda:0,cuda:1", "cpu,cpu" (replicas on the CPU), or "auto" (every visible GPU)."""
    if not spec:
        return ()
    if spec.strip().lower() == "auto":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError("--devices auto needs CUDA GPUs and none is visible; leave it out to use the CPU")
        return tuple(f"cuda:{i}" for i in range(count))
    devices = tuple(d.strip() for d in spec.split(",") if d.strip())
    for d in devices:
        if d != "cpu" and not (d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ConfigError(f"--devices: {d!r} is not a device; use cpu, cuda or cuda:N, comma-separated")
    return devices


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may really use: its affinity mask, capped by a cgroup v2 CPU quota (a container
    given 2 CPUs on a 64-core host sees 64 in os.cpu_count(), and 64 spinning threads would share 2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = (cgroup_root / "cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 quota here
        pass
    return max(1, cpus)


def share_cpus() -> tuple[int, CpuShare | None]:
    """Set a server's compute threads before torch loads: one per usable CPU (``usable_cpus``), and how idle
    OpenMP threads wait; (the count, the CpuShare that fits it to the CPUs others leave free, or None).

    By default threads spin briefly (libgomp ``GOMP_SPINCOUNT`` 100,000, Intel OpenMP ``KMP_BLOCKTIME`` 1 ms),
    so a pass's parallel regions start at once, and each pass runs on the CPUs other processes leave free
    (nvrag/cpus.py), so no thread spins on a CPU another process needs. Where that cannot be measured (no
    /proc, or a cgroup quota below the CPUs this process may run on: spinning would spend the quota) threads
    sleep when idle (``OMP_WAIT_POLICY=PASSIVE``). Whatever the user set wins: an explicit OMP_NUM_THREADS or
    wait policy keeps the count fixed."""
    explicit = any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or usable_cpus()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    share = None
    if not explicit:
        try:
            cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            cpus = set()
        if len(cpus) == threads:  # no quota below the CPUs it may run on
            share = CpuShare(threads, cpus)
            share = share if share.measurable else None
    if share is not None:
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
        os.environ.setdefault("KMP_BLOCKTIME", "1")  # Intel OpenMP's equivalent, in milliseconds
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("KMP_BLOCKTIME", "0")
    if "torch" in sys.modules:  # too late for the environment: set torch's pool directly
        import torch

        torch.set_num_threads(threads)
    return threads, share


def fit_threads(share: CpuShare) -> Callable[[], None]:
    """A scheduler's ``before_pass``: the calling worker's compute threads set to ``share.threads()`` (OpenMP
    keeps the count per thread, so it is set in the thread that runs the passes)."""
    import torch

    def fit() -> None:
        wanted = share.threads()
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    return fit
