"""Which devices there are: whether CUDA is available (without importing torch where it cannot be) and the
``--devices`` option."""

from __future__ import annotations

import sys
from pathlib import Path

from nvrag.errors import ConfigError

__all__ = ["cuda_available", "nvidia_driver_possible", "parse_devices"]


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
