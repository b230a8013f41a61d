"""Which devices there are: whether CUDA is available (without importing torch where it cannot be) and the
``--devices`` option."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path

from nvrag.cpus import CpuShare
from nvrag.errors import ConfigError

__all__ = [
    "cap_threads_to_quota",
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


CGROUP_ROOT = Path("/sys/fs/cgroup")
OWN_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path | None = None, own: Path | None = None) -> int:
    """The CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota (a container
    given 2 CPUs on a 64-core host sees 64 in os.cpu_count(), and 64 spinning threads would share 2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = quota_cpus(cgroup_root or CGROUP_ROOT, own or OWN_CGROUP)
    return max(1, cpus if quota is None else min(cpus, quota))


def quota_cpus(cgroup_root: Path, own: Path) -> int | None:
    """The CPUs' worth of time a cgroup CPU quota gives this process (rounded up), or None without one: cgroup
    v2's ``cpu.max`` in the process's own cgroup or at the root (what a container sees), else cgroup v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (Docker on a cgroup-v1 host), read the same two places."""
    try:
        lines = own.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        lines = []
    v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    v1 = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2 and "cpu" in line.split(":")[1].split(",")]
    for path in [*v2, "/"]:
        try:
            quota, period = (cgroup_root / path.lstrip("/") / "cpu.max").read_text(encoding="ascii").split()[:2]
            if quota != "max" and int(period) > 0:
                return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError):
            continue
    for folder in ("cpu", "cpu,cpuacct"):
        for path in [*v1, "/"]:
            where = cgroup_root / folder / path.lstrip("/")
            try:
                quota_us = int((where / "cpu.cfs_quota_us").read_text(encoding="ascii"))
                period_us = int((where / "cpu.cfs_period_us").read_text(encoding="ascii"))
            except (OSError, ValueError):
                continue
            if quota_us > 0 and period_us > 0:  # -1: no quota
                return max(1, math.ceil(quota_us / period_us))
    return None


def cap_threads_to_quota(environ: MutableMapping[str, str], cgroup_root: Path | None = None) -> int | None:
    """Every command's compute threads capped to a cgroup CPU quota below the CPUs the process may run on, idle
    threads sleeping (spinning would spend the quota): the count set, or None where there is no such quota or
    the user set OMP_NUM_THREADS. OpenMP starts a thread per CPU the process may run on, so a container given 2
    CPUs on a 64-core host started 64 threads for 2 CPUs' time (docs/performance.md, "CPU quotas": level on a
    2-CPU VM, 8 threads on 1 CPU's time 4% slower). Must run before torch starts its thread pool (the CLI
    calls it first thing)."""
    if environ.get("OMP_NUM_THREADS"):
        return None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None
    usable = usable_cpus(cgroup_root)
    if usable >= affinity:
        return None
    environ["OMP_NUM_THREADS"] = str(usable)
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    environ.setdefault("KMP_BLOCKTIME", "0")
    return usable


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
