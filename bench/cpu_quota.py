"""Compute threads under a cgroup CPU quota (a container's `--cpus`, a Kubernetes CPU limit), whole process
against whole process:

    sudo python bench/cpu_quota.py [--documents 400] [--repeat 3]

Makes a cgroup (v1's cpu controller or v2's cpu.max; needs root) whose quota is half the CPUs this process may
run on (at least 1; --quota), and runs `nvrag embed` of NFCorpus documents with the bundled model (in the dtype
nvrag picks for this CPU, or --dtype) inside it, three ways: the thread count `nvrag` now chooses there (one per
quota CPU, idle threads sleeping); what PyTorch chose before (one thread per CPU the process may be scheduled on,
idle threads spinning: libgomp's default); and 4x that (what a host with 4x the CPUs would have started). Prints
documents/s of each (median of --repeat whole processes; a run over --limit seconds is stopped and reported as
such) and the ratio to the first. The cgroup is removed at the end. The machine line names the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nvrag.embedder.dtypes import cpu_flags

REPO = Path(__file__).resolve().parent.parent
NFCORPUS = REPO.parent / "shared" / "data" / "nfcorpus" / "corpus.jsonl"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")


def make_group(cpus: int) -> tuple[Path, Path]:
    """(the group's folder, the file a pid is written to) for a new cgroup allowed ``cpus`` CPUs' time."""
    name = f"nvrag-bench-{os.getpid()}"
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").is_file():
        group = v1 / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(100000 * cpus))
        return group, group / "cgroup.procs"
    v2 = Path("/sys/fs/cgroup")
    if "cpu" not in (v2 / "cgroup.controllers").read_text().split():
        raise SystemExit("no cgroup CPU controller here")
    (v2 / "cgroup.subtree_control").write_text("+cpu")
    group = v2 / name
    group.mkdir()
    (group / "cpu.max").write_text(f"{100000 * cpus} 100000")
    return group, group / "cgroup.procs"


def embed_seconds(texts: Path, procs: Path, env: dict[str, str], dtype: str, repeat: int, limit: float) -> float:
    """Median seconds of ``repeat`` whole `nvrag embed` processes in the group; inf once one passes ``limit``
    (the rest are not run: an arrangement that slow is reported as over the limit)."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="nvrag-quota-") as tmp:
            command = [sys.executable, "-m", "nvrag", "embed", "--input", str(texts), "-o", f"{tmp}/v.npy"]
            command += ["--model", "all-MiniLM-L6-v2"] + (["--dtype", dtype] if dtype else [])
            started = time.perf_counter()
            try:
                subprocess.run(command, env=env, check=True, capture_output=True, timeout=limit,
                               preexec_fn=lambda: procs.write_text(str(os.getpid())))  # fmt: skip
            except subprocess.TimeoutExpired:
                return float("inf")
            runs.append(time.perf_counter() - started)
            print(f"  {runs[-1]:.2f} s", file=sys.stderr, flush=True)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quota", type=int, default=0, help="CPUs the cgroup allows (default: half of them)")
    parser.add_argument("--dtype", default="", help="compute dtype (default: what nvrag picks for this CPU)")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds a run may take before it is stopped")
    args = parser.parse_args()
    affinity = len(os.sched_getaffinity(0))
    quota = args.quota or max(1, affinity // 2)
    base = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | {"HF_HUB_OFFLINE": "1"}
    ways = {
        f"nvrag now: {quota} thread(s), sleeping when idle": base,
        f"before: {affinity} threads (one per CPU it may run on), spinning": base | {"OMP_NUM_THREADS": str(affinity)},
        f"a 4x larger host's default: {4 * affinity} threads, spinning": base | {"OMP_NUM_THREADS": str(4 * affinity)},
    }
    group, procs = make_group(quota)
    try:
        with tempfile.TemporaryDirectory(prefix="nvrag-quota-texts-") as tmp:
            texts = Path(tmp) / "texts.jsonl"
            with NFCORPUS.open(encoding="utf-8") as f, texts.open("w", encoding="utf-8") as out:
                for _, line in zip(range(args.documents), f, strict=False):
                    row = json.loads(line)
                    out.write(json.dumps(f"{row.get('title', '')} {row['text']}".strip()) + "\n")
            seconds = {}
            for way, env in ways.items():
                print(way, file=sys.stderr, flush=True)
                seconds[way] = embed_seconds(texts, procs, env, args.dtype, args.repeat, args.limit)
    finally:
        group.rmdir()
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"})
    print(f"machine: {platform.machine()} ({', '.join(flags)}), {affinity} CPUs it may run on, quota {quota} CPU(s)")
    dtype = args.dtype or "nvrag's default dtype for this CPU"
    print(f"`nvrag embed` of {args.documents} NFCorpus documents, all-MiniLM-L6-v2 ({dtype}), whole process\n")
    print("| threads | seconds (median) | documents/s | vs nvrag now |\n| --- | ---: | ---: | ---: |")
    first = next(iter(seconds.values()))
    for way, s in seconds.items():
        if s == float("inf"):
            print(f"| {way} | over {args.limit:.0f} (stopped) | under {args.documents / args.limit:.1f} | - |")
        else:
            print(f"| {way} | {s:.2f} | {args.documents / s:.1f} | {first / s:.2f}x |")


if __name__ == "__main__":
    main()
