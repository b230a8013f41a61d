"""Where int8's error comes from at NV-Embed-v2's real shape: each part of ``--dtype int8`` alone.

    python bench/int8_error.py --folder /tmp/nvembed-real [--documents 2] [--json out.json]

Loads the real-shape checkpoint (bench/realshape.py; written by bench/nvembed_realshape.py) in bfloat16 and
embeds one query (29 tokens, the second half pooled, as bench/nvembed_realshape.py does) and ``--documents``
documents of 512 random tokens, then again with one kind of error at a time in every decoder matmul, and prints
the cosine of each variant's vectors to bfloat16's:

- ``int8 (model/int8.py)``: what ``--dtype int8`` runs, weights and inputs quantised;
- ``weights int8 per output channel``: the weights quantised as int8 does, dequantised, inputs exact;
- ``weights int8 per group of 128``: finer weight scales (no int8 matmul kernel here takes them);
- ``inputs int8 per row``: the inputs quantised as int8 does, weights exact; then the same for only some layers
  (attention's q/k/v/o, o alone, the MLP's down projection);
- ``noise``: Gaussian noise at 0.89% of each matmul output's RMS (int8's rounding error for Gaussian rows of
  4,096) and at 0.11% (bfloat16's own rounding of each output): how much any error of that size costs here.

Each variant's cosine is relative to the one bfloat16 pass; about 25 s per variant on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nvrag.model import load_model  # noqa: E402
from nvrag.model.int8 import quantize, quantize_rows  # noqa: E402

INT8_ROUNDING = 0.0089  # RMS error of 8-bit rows scaled to their maximum, for Gaussian rows of 4,096
BF16_ROUNDING = 0.0011  # RMS relative error of rounding to bfloat16 (2^-9 / sqrt(3))


def dequantised(weight: torch.Tensor, group: int | None = None) -> torch.Tensor:
    rows = weight if group is None else weight.reshape(-1, group)
    q, scale = quantize_rows(rows)
    return (q.float() * scale).to(weight.dtype).reshape(weight.shape)


def quantised_input(_: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
    (x,) = args
    q, scale = quantize_rows(x.reshape(-1, x.shape[-1]))
    return ((q.float() * scale).to(x.dtype).view_as(x),)


def noise(level: float) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1)

    def hook(_: nn.Module, __: Any, out: torch.Tensor) -> torch.Tensor:
        rms = out.float().pow(2).mean().sqrt()
        return (out.float() + torch.randn(out.shape, generator=g) * rms * level).to(out.dtype)

    return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="the real-shape checkpoint")
    parser.add_argument("--documents", type=int, default=2)
    parser.add_argument("--json", dest="json_out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.folder, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 32000, (1, 29), generator=g)
    mask = torch.ones_like(ids)
    pool = mask.clone()
    pool[0, :14] = 0
    docs = torch.randint(3, 32000, (args.documents, 512), generator=g)
    full = torch.ones_like(docs)

    def vectors() -> torch.Tensor:
        with torch.inference_mode():
            query = model(ids, mask, pool, folded=True)
            return torch.cat([query.float(), model(docs, full, full.clone(), folded=True).float()])

    reference = vectors()
    linears = [(name, child) for parent in model.backbone.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Linear)]  # fmt: skip
    originals = [child.weight for _, child in linears]
    results: dict[str, dict[str, Any]] = {}

    def measure(label: str) -> None:
        start = time.perf_counter()
        cos = torch.cosine_similarity(vectors(), reference).tolist()
        results[label] = {"query": round(cos[0], 4), "documents": [round(c, 4) for c in cos[1:]]}
        print(f"| {label} | {cos[0]:.4f} | {min(cos[1:]):.4f}-{max(cos[1:]):.4f} |", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    def with_weights(label: str, group: int | None) -> None:
        with torch.no_grad():
            for (_, child), weight in zip(linears, originals, strict=True):
                child.weight = nn.Parameter(dequantised(weight, group), requires_grad=False)
        measure(label)
        for (_, child), weight in zip(linears, originals, strict=True):
            child.weight = weight

    def with_hooks(label: str, names: set[str] | None, hook: Any, pre: bool = True) -> None:
        chosen = [child for name, child in linears if names is None or name in names]
        register = "register_forward_pre_hook" if pre else "register_forward_hook"
        handles = [getattr(child, register)(hook) for child in chosen]
        measure(label)
        for handle in handles:
            handle.remove()

    print(f"{len(linears)} decoder matmuls; cosine to bfloat16's vectors (1 query, {args.documents} documents)\n")
    print("| int8's error, alone | query | documents |")
    print("| --- | ---: | ---: |")
    with_weights("weights int8 per output channel, inputs exact", None)
    with_weights("weights int8 per group of 128, inputs exact", 128)
    with_hooks("inputs int8 per row, weights exact", None, quantised_input)
    with_hooks("inputs int8 per row: q, k, v, o only", {"q", "k", "v", "o"}, quantised_input)
    with_hooks("inputs int8 per row: o only", {"o"}, quantised_input)
    with_hooks("inputs int8 per row: down only", {"down"}, quantised_input)
    with_hooks(f"noise {INT8_ROUNDING:.2%} of each output", None, noise(INT8_ROUNDING), pre=False)
    with_hooks(f"noise {BF16_ROUNDING:.2%} of each output", None, noise(BF16_ROUNDING), pre=False)
    quantize(model.backbone)  # last: it replaces the layers
    measure("int8 (model/int8.py): weights and inputs")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
