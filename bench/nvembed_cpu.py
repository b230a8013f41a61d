"""NV-Embed on the CPU, whole process: `nvrag embed` of issue 14's workload on a random checkpoint of its shape.

    python bench/nvembed_cpu.py [--repeat 3]

Writes a random checkpoint in the real format (config.json with text_config and latent_attention_config,
sharded safetensors with the reference's parameter names, the fixture's Mistral tokenizer) of the shape
``issue14`` in bench/nvembed_encode.py (hidden 512, 8 layers, 8 heads of 64, 2 KV heads, intermediate 1,536,
vocab 32,000; latent attention 128 latents, 4 heads, inner 2,048), and the workload: 96 texts, 84 of 30-200
tokens and 12 of 400-1,500 (random token ids decoded to text). Then times `nvrag embed --input ... --output ...`
as a whole process in float32 and in bfloat16 (best of --repeat; peak RSS of the process), and splits where the
time goes: the process start (`nvrag embed` of one short text), tokenising (the embedder's tokenize, timed in
this process) and the rest (model load and forward passes). Compares the two dtypes' vectors (min cosine).

NVIDIA's reference code on the same checkpoint and workload, whole process against whole process, is
bench/nvembed_reference.py (it needs the reference's files and a venv of their own); the model-only comparison
with a reference-style path is bench/nvembed_encode.py's.
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
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvembed_encode import SHAPES, parse_lengths, random_model

from nvrag.model.loading import name_map

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO.parent / "shared" / "fixtures" / "nvembed-tiny"


def write_checkpoint(folder: Path, seed: int) -> None:
    """The issue14 shape as a checkpoint folder nvrag (and the reference) load."""
    config = SHAPES["issue14"]
    model = random_model(config, torch.device("cpu"), torch.float32, seed)
    names = name_map(config)
    state = {names[k]: v.contiguous() for k, v in model.state_dict().items() if k in names}
    data = json.loads((FIXTURE / "config.json").read_text(encoding="utf-8"))
    t, lat = config.text, config.latent
    data["hidden_size"] = t.hidden_size
    data["text_config"] |= {
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "vocab_size": t.vocab_size,
    }
    data["latent_attention_config"] |= {
        "num_latents_value": lat.num_latents_value,
        "num_cross_heads": lat.num_cross_heads,
        "cross_dim_head": lat.cross_dim_head,
        "hidden_dim": lat.hidden_dim,
        "latent_dim": lat.latent_dim,
    }
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for shard, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(folder / shard), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard_keys, shard)
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(FIXTURE / name, folder / name)


def workload(seed: int) -> list[str]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(FIXTURE / "tokenizer.json"))
    g = torch.Generator().manual_seed(seed)
    texts = []
    for n in parse_lengths("issue14", 96, seed):
        ids = torch.randint(1000, 30000, (n,), generator=g).tolist()
        texts.append(tokenizer.decode(ids).replace("\n", " "))
    return texts


def useful_flops(lengths: list[int]) -> float:
    """Matmul FLOPs on the real tokens: the decoder's projections and MLP per token, its attention per pair of
    tokens, and the latent layer per token (query and output projections, 128 latents' scores and values, the
    GEGLU feed-forward), as the unfolded reference computes it."""
    config = SHAPES["issue14"]
    t, lat = config.text, config.latent
    head = t.hidden_size // t.num_attention_heads
    kv = head * t.num_key_value_heads
    decoder = 2 * (2 * t.hidden_size**2 + 2 * t.hidden_size * kv + 3 * t.hidden_size * t.intermediate_size)
    inner = lat.num_cross_heads * lat.cross_dim_head
    latent = 2 * (2 * lat.hidden_dim * inner + 2 * lat.num_latents_value * inner)
    latent += 2 * (lat.hidden_dim * 8 * lat.hidden_dim + 4 * lat.hidden_dim * lat.hidden_dim)  # GEGLU, mult 4
    pairs = sum(4 * n * n * t.hidden_size for n in lengths)
    return float((decoder * t.num_hidden_layers + latent) * sum(lengths) + pairs * t.num_hidden_layers)


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process (measured by a wrapper that only waits for it)."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "done.returncode and sys.exit(done.stderr[-3000:]); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *command], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    seconds, peak = done.stdout.split()
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder, texts_file = Path(tmp) / "ckpt", Path(tmp) / "texts.jsonl"
        write_checkpoint(folder, args.seed)
        texts = workload(args.seed)
        texts_file.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NVRAG_DB": str(Path(tmp) / "db")}

        from nvrag.embedder.nvembed import NVEmbedEmbedder

        embedder = NVEmbedEmbedder(folder)
        started = time.perf_counter()
        lengths = [len(ids) for ids in embedder.tokenize(texts, "")]
        tokenising = time.perf_counter() - started
        tokens, flops = sum(lengths), useful_flops(lengths)

        nvrag = [sys.executable, "-m", "nvrag", "embed", "--model-path", str(folder)]
        start_s, _ = min(run([*nvrag, "hello", "--dtype", "float32"], env) for _ in range(args.repeat))
        rows = []
        vectors = {}
        for dtype in ("float32", "bfloat16"):
            out = Path(tmp) / f"{dtype}.npy"
            command = [*nvrag, "--input", str(texts_file), "--output", str(out), "--dtype", dtype]
            seconds, peak = min(run(command, env) for _ in range(args.repeat))
            vectors[dtype] = np.load(out)
            rows.append((dtype, seconds, peak))
    cosine = float(np.min(np.sum(vectors["float32"] * vectors["bfloat16"], axis=1)))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"96 texts, {tokens} tokens, {flops / 1e9:.0f} GFLOP of useful matmul work; best of {args.repeat}"
    )
    print(f"process start + model load + one short text: {start_s:.2f} s; tokenising the workload: {tokenising:.2f} s")
    print(
        "| dtype | whole process s | of which forward passes (approx.) | tokens/s in the forward passes "
        "| GFLOP/s in them | peak MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for dtype, seconds, peak in rows:
        forward = seconds - start_s - tokenising
        print(
            f"| {dtype} | {seconds:.2f} | {forward:.2f} | {tokens / forward:,.0f} | {flops / forward / 1e9:.0f} "
            f"| {peak:.0f} |"
        )
    print(f"min cosine bfloat16 to float32: {cosine:.6f}")


if __name__ == "__main__":
    main()
