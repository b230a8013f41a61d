"""CLI start-up, whole process against whole process: each command run --repeat times, the median reported.

    python bench/startup.py [--repeat 5]

Commands: `nvrag --help`, `nvrag info`, `nvrag search` cold on the demo index (built first, not timed), the
fixed cost of `nvrag embed` (one short text) with the bundled model and with a 47.9 M-parameter NV-Embed
checkpoint of issue 14's shape (bench/nvembed_cpu.py writes it, random weights), and an `nvrag index` re-run of a
three-document folder with one document changed before each run (the bundled model; the run embeds one chunk,
replaces it and refreshes the full-text index). As references measured in the same run: a bare `python -c
pass`, and `python -c "import torch"` (what `nvrag embed` and `nvrag index` cannot avoid; a search with the
bundled model no longer imports it) and `python -c "import lancedb"` (only vector-index builds import it). Run
it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
NVRAG = [sys.executable, "-m", "nvrag"]


def timed(command: list[str], env: dict[str, str], repeat: int, before: Callable[[int], None] | None = None) -> float:
    runs = []
    for run in range(repeat):
        if before is not None:
            before(run)
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from nvembed_cpu import write_checkpoint

    with tempfile.TemporaryDirectory() as db:
        env = {**os.environ, "NVRAG_DB": db, "HF_HUB_OFFLINE": "1"}
        subprocess.run([*NVRAG, "index", str(REPO / "data" / "demo"), "--index", "demo"], env=env, check=True)
        checkpoint = Path(db) / "nvembed-issue14"
        write_checkpoint(checkpoint, seed=0)
        folder = Path(db) / "three"
        folder.mkdir()
        for name, text in [("a", "hashing a file"), ("b", "reading a pipe"), ("c", "walking a directory")]:
            (folder / f"{name}.txt").write_text(f"how to go about {text} in Python\n", encoding="utf-8")
        reindex = [*NVRAG, "index", str(folder), "--index", "three", "--model", "all-MiniLM-L6-v2"]
        subprocess.run(reindex, env=env, check=True, capture_output=True)

        def change(run: int) -> None:
            (folder / "a.txt").write_text(f"how to go about hashing a file in Python, take {run}\n", encoding="utf-8")

        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
            ("python -c 'import lancedb'", [sys.executable, "-c", "import lancedb"]),
            ("nvrag --help", [*NVRAG, "--help"]),
            ("nvrag info", [*NVRAG, "info"]),
            ("nvrag search (cold, demo, -k 3)", [*NVRAG, "search", "read a file", "--index", "demo", "-k", "3"]),
            ("nvrag embed (one text, MiniLM)", [*NVRAG, "embed", "hello world", "--model", "all-MiniLM-L6-v2"]),
            (
                "nvrag embed (one text, NV-Embed 47.9 M, float32)",
                [*NVRAG, "embed", "hello world", "--model-path", str(checkpoint), "--dtype", "float32"],
            ),
        ]
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}; median of {args.repeat} runs"
        )
        print("| command | seconds |\n| --- | --- |")
        for label, command in rows:
            print(f"| `{label}` | {timed(command, env, args.repeat):.2f} |")
        label = "nvrag index (re-run, 1 of 3 documents changed, MiniLM)"
        print(f"| `{label}` | {timed(reindex, env, args.repeat, change):.2f} |")


if __name__ == "__main__":
    main()
