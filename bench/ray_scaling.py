"""The Ray engine against the single-process engine on this machine: documents/s and peak memory.

    python bench/ray_scaling.py [--corpus ../shared/data/nfcorpus/corpus.jsonl] [--limit 1000] [--workers 1 2]

Each configuration runs the real CLI (`nvrag index`, bundled all-MiniLM-L6-v2) in a fresh process into a fresh
LanceDB directory: first `--engine local`, then `--engine ray --workers N` for each N (Ray starts a local
cluster of this machine's CPUs, so its start-up is included, as a user would see it). Peak memory is the
machine's used memory (MemTotal - MemAvailable) above what was in use before the run, sampled every 0.2 s:
it counts every process of the run (Ray's raylet, GCS, workers and object store included). The chunk-id sets of
all runs are compared at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nfcorpus" / "corpus.jsonl"


def used_mib() -> float:
    info: dict[str, int] = {}
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def run(args: list[str], db: Path) -> tuple[float, float, dict[str, object]]:
    """(wall seconds, peak MiB above the baseline, the --json report) of one `nvrag index` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db))
    baseline = used_mib()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, used_mib())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "nvrag", "index", *args, "--json"], capture_output=True, text=True, env=env, check=False
    )
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if result.returncode not in (0, 1):
        sys.exit(f"nvrag index {' '.join(args)} failed:\n{result.stderr}")
    return wall, peak - baseline, json.loads(result.stdout)


def chunk_ids(db: Path, index: str) -> set[str]:
    from nvrag.store import LanceStore

    return set().union(*LanceStore(str(db)).open(index).chunk_ids_by_doc().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=1000, help="the first N documents (0: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nvrag-ray-bench-"))
    corpus = root / "corpus.jsonl"
    with args.corpus.open(encoding="utf-8") as src, corpus.open("w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            if args.limit and n >= args.limit:
                break
            dst.write(line)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; corpus: {corpus}")
    configs = [("local", [])] + [(f"ray x{w}", ["--engine", "ray", "--workers", str(w)]) for w in args.workers]
    rows = []
    ids: list[set[str]] = []
    for n, (label, extra) in enumerate(configs):
        db = root / f"db{n}"
        wall, peak, report = run([str(corpus), "--index", "bench", "--batch-size", str(args.batch_size), *extra], db)
        docs = int(report["documents"])  # type: ignore[call-overload]
        chunks = int(report["chunks_added"])  # type: ignore[call-overload]
        rows.append((label, docs, chunks, wall, docs / wall, peak))
        ids.append(chunk_ids(db, "bench"))
        print(f"{label}: {docs} documents, {chunks} chunks in {wall:.1f} s", flush=True)
    print("\n| engine | documents | chunks | wall s | documents/s | peak memory MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, docs, chunks, wall, rate, peak in rows:
        print(f"| {label} | {docs} | {chunks} | {wall:.1f} | {rate:.1f} | {peak:.0f} |")
    print(f"\nsame chunk ids in every run: {all(i == ids[0] for i in ids)}")


if __name__ == "__main__":
    main()
