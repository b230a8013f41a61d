"""NV-Embed encoding throughput and peak memory, with random weights of any shape.

Compares attention backends, batching strategies and a reference-style path on the same random inputs:

- ``reference``: what NVIDIA's remote code does: inputs in the given order, a fixed number of texts per call,
  padded to the longest of the call, eager attention with a dense additive mask, and the latent keys/values
  recomputed for every sequence (the latents are expanded per row before ``to_kv``).
- ``fixed-<backend>``: the same fixed batches, our model (latent K/V computed once) with that backend.
- ``budget-<backend>[-folded]``: ours: length-sorted batches under a token budget, optionally the folded latent layer.

Each strategy runs in its own process, so peak memory (CPU: max RSS; CUDA: max allocated) is its own.
Token ids are random: tokenisation is not measured. Throughput counts real (non-padding) tokens.

    python bench/nvembed_encode.py --shape small --lengths mixed:16-512 --texts 64
    python bench/nvembed_encode.py --shape real --device cuda --dtype bfloat16 --lengths 512 --texts 256
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

import torch

from nvrag.embedder.base import token_budget_batches
from nvrag.model import LatentConfig, NVEmbedConfig, NVEmbedModel, available_backends, nvembed_text_config, tiny_config

SHAPES: dict[str, NVEmbedConfig] = {
    "tiny": tiny_config(),
    "small": NVEmbedConfig(
        text=nvembed_text_config(
            hidden_size=512, intermediate_size=1792, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2
        ),
        latent=LatentConfig(
            num_latents_value=512, num_cross_heads=8, cross_dim_head=512, hidden_dim=512, latent_dim=512
        ),
    ),
    "real": NVEmbedConfig(),  # Mistral-7B + 512 latents x 8 heads x 4096: 7.85 B parameters
    # issue 14's CPU checkpoint: the real structure scaled down (8 layers, 8 heads of 64, 2 KV heads; latent
    # attention 128 latents, 4 heads, inner 2,048)
    "issue14": NVEmbedConfig(
        text=nvembed_text_config(
            hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2
        ),
        latent=LatentConfig(
            num_latents_value=128, num_cross_heads=4, cross_dim_head=512, hidden_dim=512, latent_dim=512
        ),
    ),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_lengths(spec: str, count: int, seed: int) -> list[int]:
    """``512`` (all equal), ``mixed:LO-HI`` (log-uniform between LO and HI, like real corpora) or ``issue14``
    (issue 14's CPU workload: 84 texts of 30-200 tokens and 12 of 400-1,500, shuffled; ``count`` is ignored)."""
    if spec == "issue14":
        g = torch.Generator().manual_seed(seed)
        short = torch.randint(30, 201, (84,), generator=g).tolist()
        long = torch.randint(400, 1501, (12,), generator=g).tolist()
        mixed = short + long
        return [mixed[i] for i in torch.randperm(len(mixed), generator=g).tolist()]
    if spec.startswith("mixed:"):
        lo, hi = (int(x) for x in spec.removeprefix("mixed:").split("-"))
        g = torch.Generator().manual_seed(seed)
        logs = torch.empty(count).uniform_(
            float(torch.log(torch.tensor(lo))), float(torch.log(torch.tensor(hi))), generator=g
        )
        return [int(x) for x in logs.exp().round().tolist()]
    return [int(spec)] * count


def random_model(config: NVEmbedConfig, device: torch.device, dtype: torch.dtype, seed: int) -> NVEmbedModel:
    with torch.device("meta"):
        model = NVEmbedModel(config)
    model = model.to(dtype).to_empty(device=device)  # allocate once, directly in the target dtype
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return model.eval().requires_grad_(False).prepare()


def pad(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), 2, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def batches_for(strategy: str, lengths: list[int], fixed: int, budget: int) -> list[list[int]]:
    if strategy == "reference" or strategy.startswith("fixed-"):
        return [list(range(i, min(i + fixed, len(lengths)))) for i in range(0, len(lengths), fixed)]
    return token_budget_batches(lengths, budget, 10_000)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = SHAPES[args.shape]
    lengths = parse_lengths(args.lengths, args.texts, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    texts = [torch.randint(3, config.text.vocab_size, (n,), generator=g).tolist() for n in lengths]
    model = random_model(config, device, dtype, args.seed)
    strategy = args.run_one
    reference = strategy == "reference"
    backend = "eager" if reference else strategy.split("-")[1]
    folded = strategy.endswith("-folded")
    batches = batches_for(strategy, lengths, args.fixed_batch, args.budget)
    if reference:
        model.pool._kv = None  # recompute the latent keys/values on every call, as the reference does
        model.pool._folded = None

    def encode_all() -> None:
        for batch in batches:
            ids, mask = pad([texts[i] for i in batch], device)
            if reference:
                for _ in range(len(batch) - 1):  # the reference expands the latents per row: one K/V per sequence
                    model.pool.latent_kv()
            model(ids, mask, mask, backend=backend, folded=folded)  # type: ignore[arg-type]
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        ids, mask = pad([texts[0][:16]], device)
        model(ids, mask, mask, backend=backend, folded=folded)  # type: ignore[arg-type]  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            encode_all()
            times.append(time.perf_counter() - start)
    best = min(times)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    result = {
        "strategy": strategy,
        "tokens": sum(lengths),
        "padded_tokens": padded,
        "batches": len(batches),
        "seconds": round(best, 4),
        "tokens_per_s": round(sum(lengths) / best, 1),
    }
    if device.type == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    else:
        result["peak_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB → GiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--lengths", default="mixed:16-512", help="N, or mixed:LO-HI (log-uniform)")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--budget", type=int, default=4096, help="token budget per batch (ours; CPU default 4096)")
    parser.add_argument("--fixed-batch", type=int, default=8, help="texts per call (reference, fixed-*)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", default="", help="comma-separated; default: every one available")
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_one(args)))
        return
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    backends = available_backends(device, dtype)
    strategies = (
        args.strategies.split(",")
        if args.strategies
        else [
            "reference",
            *(f"fixed-{b}" for b in ("eager", "sdpa") if b in backends),
            *(f"budget-{b}" for b in backends),
            f"budget-{'flash' if 'flash' in backends else 'sdpa'}-folded",
        ]
    )
    results = []
    for strategy in strategies:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--run-one", strategy]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{strategy}: failed\n{done.stderr}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    config = {k: v for k, v in vars(args).items() if k not in ("run_one", "json_out")}
    print(f"machine: {machine}\nconfig: {config}\nshape: {asdict(SHAPES[args.shape])}\n")
    base = next((r["tokens_per_s"] for r in results if r["strategy"] == "reference"), None)
    print("| strategy | batches | padded/real tokens | tokens/s | vs reference | peak GiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        speedup = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        ratio = r["padded_tokens"] / r["tokens"]
        cells = [r["strategy"], r["batches"], f"{ratio:.2f}", f"{r['tokens_per_s']:,.0f}", speedup, r["peak_gib"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "config": config, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
