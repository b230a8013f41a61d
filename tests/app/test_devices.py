"""A server's compute threads (nvrag/app/devices.share_cpus): one per usable CPU, spinning briefly and fitted
to what other processes leave free where that can be measured, else sleeping when idle; whatever the user set
explicitly wins. Each case runs in a fresh interpreter, since the settings
only matter before torch starts its thread pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NAMES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")


def settings_after_share_cpus(**given: str) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k not in NAMES} | given
    code = (
        "import json, os\nfrom nvrag.app.devices import share_cpus, usable_cpus\n"
        "threads, share = share_cpus()\nassert threads == int(os.environ['OMP_NUM_THREADS'])\n"
        "affinity = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 0\n"
        f"print(json.dumps({{n: os.environ.get(n) for n in {NAMES!r}}} | {{'usable': str(usable_cpus()), "
        "'affinity': str(affinity), 'adaptive': share is not None}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, str | None] = json.loads(done.stdout)
    return result


def test_by_default_one_thread_a_usable_cpu_spinning_briefly_where_the_share_is_measured() -> None:
    got = settings_after_share_cpus()
    assert got["OMP_NUM_THREADS"] == got["usable"]
    if got["usable"] == got["affinity"] and Path("/proc/stat").is_file():  # no quota below the CPUs it may use
        assert got["adaptive"] is True
        assert (got["OMP_WAIT_POLICY"], got["GOMP_SPINCOUNT"], got["KMP_BLOCKTIME"]) == (None, "100000", "1")
    else:  # spinning would spend a quota, or the share cannot be measured: idle threads sleep
        assert got["adaptive"] is False
        assert (got["OMP_WAIT_POLICY"], got["GOMP_SPINCOUNT"], got["KMP_BLOCKTIME"]) == ("PASSIVE", None, "0")


def test_a_thread_count_given_keeps_it_fixed_with_sleeping_threads() -> None:
    got = settings_after_share_cpus(OMP_NUM_THREADS="1")
    assert got["adaptive"] is False
    assert (got["OMP_NUM_THREADS"], got["OMP_WAIT_POLICY"], got["GOMP_SPINCOUNT"]) == ("1", "PASSIVE", None)


def test_what_the_user_set_wins() -> None:
    got = settings_after_share_cpus(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1", KMP_BLOCKTIME="5")
    assert (got["OMP_NUM_THREADS"], got["OMP_WAIT_POLICY"], got["KMP_BLOCKTIME"]) == ("1", "ACTIVE", "5")
