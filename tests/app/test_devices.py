"""A server's compute threads (nvrag/app/devices.share_cpus): one per usable CPU, spinning briefly and fitted
to what other processes leave free where that can be measured, else sleeping when idle; whatever the user set
explicitly wins. Each case runs in a fresh interpreter, since the settings
only matter before torch starts its thread pool."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def cgroup_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="ascii")
    return root


def test_a_cgroup_quota_is_read_from_v2_and_v1_where_a_container_or_a_service_sees_it(tmp_path: Path) -> None:
    from nvrag.app.devices import quota_cpus

    own = tmp_path / "self-cgroup"
    own.write_text("0::/system.slice/nvrag.service\n", encoding="ascii")
    cases = [
        ({"cpu.max": "150000 100000\n"}, 2),  # a container's own root: 1.5 CPUs, rounded up
        ({"cpu.max": "max 100000\n"}, None),
        ({"system.slice/nvrag.service/cpu.max": "100000 100000\n"}, 1),  # a service's CPUQuota on the host
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),  # v1, in a container
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1: no quota
        ({"cpu/cpu.cfs_quota_us": "garbage\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ]
    for i, (files, want) in enumerate(cases):
        assert quota_cpus(cgroup_tree(tmp_path / str(i), files), own) == want, files
    v1_own = tmp_path / "v1-self-cgroup"
    v1_own.write_text("3:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n", encoding="ascii")
    tree = cgroup_tree(tmp_path / "v1", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
                                         "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})  # fmt: skip
    assert quota_cpus(tree, v1_own) == 2  # v1 on the host: the process's own cpu cgroup


def test_every_command_caps_its_threads_to_a_quota_below_its_cpus_and_the_user_wins(tmp_path: Path) -> None:
    from nvrag.app import devices

    affinity = len(os.sched_getaffinity(0))
    below = cgroup_tree(tmp_path / "below", {"cpu.max": f"{100000 * (affinity - 1) or 50000} 100000\n"})
    none = cgroup_tree(tmp_path / "none", {"cpu.max": "max 100000\n"})
    if affinity > 1:
        environ: dict[str, str] = {}
        assert devices.cap_threads_to_quota(environ, below) == affinity - 1
        assert environ == {"OMP_NUM_THREADS": str(affinity - 1), "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    environ = {}
    assert devices.cap_threads_to_quota(environ, none) is None and environ == {}  # no quota: torch's own choice
    given = {"OMP_NUM_THREADS": "7"}
    assert devices.cap_threads_to_quota(given, below) is None and given == {"OMP_NUM_THREADS": "7"}


def one_cpu_cgroup(tmp_name: str) -> Path | None:
    """A real cgroup v1 CPU group with a quota of one CPU (root on a cgroup-v1 machine, as this project's CI), or
    None where one cannot be made here."""
    parent = Path("/sys/fs/cgroup/cpu")
    if not (parent / "cpu.cfs_quota_us").is_file():
        return None
    group = parent / tmp_name
    try:
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000", encoding="ascii")
        (group / "cpu.cfs_quota_us").write_text("100000", encoding="ascii")
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def test_a_real_cpu_quota_caps_a_commands_compute_threads() -> None:
    """In a real cgroup allowed one CPU of this machine's several, torch alone starts a thread per CPU; the CLI
    (`nvrag embed` computing in bfloat16 through torch) runs on one."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: no quota can be below it")
    group = one_cpu_cgroup(f"nvrag-test-{os.getpid()}")
    if group is None:
        pytest.skip("no writable cgroup v1 CPU controller here (needs root on a cgroup-v1 machine)")
    env = {k: v for k, v in os.environ.items() if k not in NAMES} | {"HF_HUB_OFFLINE": "1"}
    alone = "import sys, torch\nprint('threads', torch.get_num_threads(), file=sys.stderr)\n"
    cli = (
        "import atexit, sys\n"  # torch is imported by the command itself, as in `nvrag`
        "atexit.register(lambda: print('threads', sys.modules['torch'].get_num_threads(), file=sys.stderr))\n"
        "from nvrag.app.cli import main\n"
        "sys.argv = ['nvrag', 'embed', 'hello', '--model', 'all-MiniLM-L6-v2', '--dtype', 'bfloat16']\nmain()\n"
    )

    def run(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr

    try:
        assert f"threads {len(os.sched_getaffinity(0))}\n" in run(alone)  # torch alone: a thread per CPU
        assert "threads 1\n" in run(cli)
    finally:
        group.rmdir()
