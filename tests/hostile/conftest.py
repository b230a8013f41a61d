"""Helpers for the hostile-input tests: the real CLI in a subprocess, with its peak memory measured."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# A loaded CI machine is 2-3x slower than a developer's: these are guards against a hang, never speed checks.
GUARD_S = 600
GIB = 1024**3


# The child reports its own peak: VmHWM, the kernel's high-water mark of resident memory for the process's
# address space since exec. (getrusage's ru_maxrss is no use here: Linux carries the forking parent's peak,
# a pytest process of gigabytes, into the child across exec.)
BOOT = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["NVRAG_TEST_PEAK_FILE"], "w") as out:
        out.write(kib)
atexit.register(_peak)
sys.argv = ["nvrag", *sys.argv[1:]]
from nvrag.app.cli import main
main()
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int  # the CLI process's own peak resident memory (its VmHWM at exit)


def cli_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NVRAG_DB=str(db), COLUMNS="400", **extra)
    return env


_STARTED: list[subprocess.Popen[bytes]] = []
_FOLDERS: list[Path] = []  # each run's output folder, removed after its test


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """A test that fails while a CLI run it started is still going kills and reaps it (a leftover would fail a
    later test with a ResourceWarning)."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.returncode is not None:
            continue  # reaped by finish() or the test itself
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(process.pid, os.WNOHANG) == (0, 0):
                process.kill()
                os.waitpid(process.pid, 0)
        process.returncode = -signal.SIGKILL
    while _FOLDERS:
        shutil.rmtree(_FOLDERS.pop(), ignore_errors=True)


def start(*args: str, db: Path, prefix: tuple[str, ...] = (), **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `python -m nvrag ARGS` with its output going to files (read by finish)."""
    folder = Path(tempfile.mkdtemp(prefix="nvrag-run-"))
    _FOLDERS.append(folder)
    environment = cli_env(db, **env, NVRAG_TEST_PEAK_FILE=str(folder / "peak"))
    with (folder / "out").open("wb") as out, (folder / "err").open("wb") as err:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-c", BOOT, *args], stdout=out, stderr=err, env=environment
        )
    _STARTED.append(process)
    return process, folder


def finish(process: subprocess.Popen[bytes], folder: Path, timeout: float = GUARD_S) -> Run:
    """Wait for a started run (killing it after ``timeout``: a hang fails the test) and collect it."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, _ = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            os.wait4(process.pid, 0)
            process.returncode = -signal.SIGKILL
            raise AssertionError(f"still running after {timeout} s: {(folder / 'err').read_text()[-2000:]}")
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = folder / "peak"
    return Run(
        process.returncode,
        (folder / "out").read_text(encoding="utf-8", errors="replace"),
        (folder / "err").read_text(encoding="utf-8", errors="replace"),
        int(peak.read_text(encoding="ascii")) * 1024 if peak.exists() else -1,
    )


def nvrag(*args: str, db: Path, prefix: tuple[str, ...] = (), timeout: float = GUARD_S, **env: str) -> Run:
    return finish(*start(*args, db=db, prefix=prefix, **env), timeout=timeout)


def no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr[-3000:]


# A live `nvrag serve` on the fake model over the demo corpus, for the modules that attack the API
# (test_api.py, test_browser_api.py); module-scoped, so each module gets its own server
FAKE_MODEL = "nvrag/fake-wordlen"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import DEMO_CORPUS
    from tests.e2e.test_cli_e2e import nvrag as cli

    db = tmp_path_factory.mktemp("hostile-api") / "db"
    built = cli("index", str(DEMO_CORPUS), "--index", "demo", "--model", FAKE_MODEL, db=db)
    assert built.returncode == 0, built.stderr
    return db


@pytest.fixture(scope="module")
def url(db: Path) -> Iterator[str]:
    from tests.api.test_server import serve

    yield from serve(db, "--model", FAKE_MODEL)
