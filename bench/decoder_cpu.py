"""A real-shape Qwen3-Embedding-0.6B on the CPU: nvrag's default against sentence-transformers, whole process
against whole process, in one run.

    python bench/decoder_cpu.py [--docs 1000] [--threads 2] [--keep DIR]

A random checkpoint of Qwen3-Embedding-0.6B's real shape (28 layers, hidden 1024, 16 query and 8 key/value
heads of 128, intermediate 3072, Qwen's real 151,669-token vocabulary, bfloat16 weights as the hub ships
them) is written with transformers' Qwen3Model, beside the sentence-transformers files the hub repo has. The
first --docs NFCorpus documents (title + " " + text, untruncated) are then embedded as documents by each path
in a process of its own, and each process is timed from its start to its exit (imports, weight loading and
embedding: what a user waits for), and its embedding call alone:

- nvrag: ``nvrag embed --model-path DIR --input docs.jsonl --output out.npy``, its defaults (bfloat16 on a CPU
  with native bf16, padding-free length-sorted batches);
- sentence-transformers (a bench-only dependency, the dev extra): ``SentenceTransformer(DIR).encode(docs)``,
  float32, its default, the model loaded through transformers' Qwen3Model.

Reported: tokens/s (real tokens), the speed-up, GFLOP/s of the useful matmul work and its share of this
machine's bfloat16 matmul peak (measured in the same run), peak memory, and the minimum cosine of nvrag's
vectors to sentence-transformers' float32 ones. Run it on an idle machine: it takes tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cpu_embed import documents  # the same NFCorpus documents (title + text) as the bundled model's bench

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO.parent / "shared" / "fixtures" / "family" / "qwen3-embedding"
SHAPE = {
    "vocab_size": 151669,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
}


def write_checkpoint(folder: Path) -> None:
    """Random weights of the real shape through transformers (as a user's download would load), bfloat16."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    config = Qwen3Config(
        **SHAPE,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    Qwen3Model(config).to(torch.bfloat16).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json"):
        shutil.copy(FIXTURE / name, folder / name)
    shutil.copytree(FIXTURE / "1_Pooling", folder / "1_Pooling")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    pooling["word_embedding_dimension"] = SHAPE["hidden_size"]
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    shutil.copy(FIXTURE / "config_sentence_transformers.json", folder)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 32768, "do_lower_case": False}), encoding="utf-8"
    )


def st_worker(folder: Path, n: int, threads: int, out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    texts = documents(n)
    # float32 as sentence-transformers documents its default; 6.x with transformers 5 would otherwise take the
    # checkpoint's stored dtype (bfloat16) and say so
    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32})
    started = time.perf_counter()
    vectors = model.encode(texts, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    np.save(out / "st.npy", np.asarray(vectors, dtype=np.float32))
    (out / "st.json").write_text(json.dumps({"embed_seconds": seconds, "peak_mib": peak_mib()}), encoding="utf-8")


def peak_mib() -> float:
    """This process's peak resident memory since its exec (VmHWM; ru_maxrss would carry the forking parent's)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def nvrag_worker(argv: list[str], out: Path) -> None:
    """`nvrag embed ...` in this process (its CLI entry point, imports included), then its peak memory."""
    from nvrag.app.cli import main as cli

    sys.argv = ["nvrag", *argv]
    try:
        cli()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    (out / "nvrag.json").write_text(json.dumps({"peak_mib": peak_mib()}), encoding="utf-8")


def token_lengths(folder: Path, texts: list[str]) -> list[int]:
    from nvrag.embedder.decoder import DecoderEmbedder

    return [len(ids) for ids in DecoderEmbedder(folder).tokenize(texts, "")]


def useful_flops(lengths: list[int]) -> float:
    """Matmul FLOPs on the real tokens: projections and MLP per token, attention (QK and PV) per pair."""
    h, inner, layers = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["num_hidden_layers"]
    q = SHAPE["num_attention_heads"] * SHAPE["head_dim"]
    kv = SHAPE["num_key_value_heads"] * SHAPE["head_dim"]
    per_token = 2 * (h * q + 2 * h * kv + q * h + 3 * h * inner) * layers
    attention = sum(4 * n * n * q * layers for n in lengths)
    return float(per_token * sum(lengths) + attention)


def bf16_peak(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def timed_process(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds from start to exit."""
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the checkpoint here instead of a temp folder")
    parser.add_argument("--st-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--write-checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--nvrag-worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.st_worker:
        st_worker(args.st_worker, args.docs, args.threads, args.out)
        return
    if args.write_checkpoint:
        write_checkpoint(args.write_checkpoint)
        return
    if args.nvrag_worker:
        nvrag_worker(args.nvrag_worker, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        folder = args.keep or out / "qwen3-0.6b-random"
        if not (folder / "config.json").is_file():  # in a process of its own: this one stays small
            subprocess.run([sys.executable, __file__, "--write-checkpoint", str(folder)], check=True)
        texts = documents(args.docs)
        (out / "docs.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
        lengths = token_lengths(folder, texts)
        tokens, flops = sum(lengths), useful_flops(lengths)
        peak = bf16_peak(args.threads)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(args.threads),
        }
        embed = ["embed", "--model-path", str(folder), "--input", str(out / "docs.jsonl")]
        worker = [sys.executable, __file__, "--out", str(out), "--nvrag-worker", *embed]
        nv_wall = timed_process([*worker, "--output", str(out / "nvrag.npy")], env)
        nv_peak = json.loads((out / "nvrag.json").read_text(encoding="utf-8"))["peak_mib"]
        st = [sys.executable, __file__, "--st-worker", str(folder), "--docs", str(args.docs), "--out", str(out)]
        st_wall = timed_process([*st, "--threads", str(args.threads)], env)
        st_figures = json.loads((out / "st.json").read_text(encoding="utf-8"))
        ours, theirs = np.load(out / "nvrag.npy"), np.load(out / "st.npy")
    cosine = float(np.min(np.sum(ours * theirs, axis=1)))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; "
        f"{args.docs} NFCorpus documents, {tokens:,} tokens (longest {max(lengths)}), {flops / 1e12:.1f} TFLOP of "
        f"useful matmul work; bfloat16 matmul peak (2048^3, same run) {peak:.0f} GFLOP/s"
    )
    print("| path | process wall s | tokens/s (whole process) | GFLOP/s (share of bf16 peak) | peak MiB |")
    print("| --- | --- | --- | --- | --- |")
    for name, wall, mib in (
        ("nvrag default", nv_wall, nv_peak),
        ("sentence-transformers fp32", st_wall, st_figures["peak_mib"]),
    ):
        rate = flops / wall / 1e9
        print(f"| {name} | {wall:.1f} | {tokens / wall:,.0f} | {rate:.0f} ({rate / peak:.0%}) | {mib:.0f} |")
    print(
        f"speed-up (whole process): {st_wall / nv_wall:.2f}x; sentence-transformers' encode alone "
        f"{st_figures['embed_seconds']:.1f} s; min cosine nvrag default vs sentence-transformers fp32: {cosine:.6f}"
    )


if __name__ == "__main__":
    main()
