"""A server's compute threads (nvrag/app/devices.share_cpus): one per usable CPU, OpenMP threads that sleep
when idle; whatever the user set explicitly wins. Each case runs in a fresh interpreter, since the settings
only matter before torch starts its thread pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys

NAMES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")


def settings_after_share_cpus(**given: str) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k not in NAMES} | given
    code = (
        "import json, os\nfrom nvrag.app.devices import share_cpus, usable_cpus\n"
        "threads = share_cpus()\nassert threads == int(os.environ['OMP_NUM_THREADS'])\n"
        f"print(json.dumps({{n: os.environ.get(n) for n in {NAMES!r}}} | {{'usable': str(usable_cpus())}}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, str | None] = json.loads(done.stdout)
    return result


def test_by_default_one_thread_a_usable_cpu_and_idle_threads_sleep() -> None:
    got = settings_after_share_cpus()
    assert (got["OMP_NUM_THREADS"], got["OMP_WAIT_POLICY"], got["KMP_BLOCKTIME"]) == (got["usable"], "PASSIVE", "0")


def test_what_the_user_set_wins() -> None:
    got = settings_after_share_cpus(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1", KMP_BLOCKTIME="5")
    assert (got["OMP_NUM_THREADS"], got["OMP_WAIT_POLICY"], got["KMP_BLOCKTIME"]) == ("1", "ACTIVE", "5")
