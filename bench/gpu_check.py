"""The GPU check: what a session lent a GPU runs first (through bench/gpu_check.sh), in under 8 minutes on one
H200, with only torch, safetensors and numpy beside nvrag's own model package (no lancedb, gradio or CLI).

Steps, each recorded in one JSON file as soon as it is done (a run cut short still leaves what it measured):

1. ``machine``: the device, its memory, torch and CUDA versions.
2. ``peak``: this device's bfloat16 matmul FLOP/s (a square matmul, best of ~1 s): the roofline every share
   below is taken against, measured in the same run.
3. ``checkpoint``: a random NV-Embed-v2 of the real shape written in the real format (bench/realshape.py; 4
   shards, 15.7 GB), once: a complete folder is reused.
4. ``load``: nvrag's loader reading it onto the device in bfloat16: seconds, peak device memory, and the time
   to read the shards' bytes alone (the floor).
5. ``agreement``: eager, SDPA, varlen (and flash-attn where installed) on the same inputs: a tiny float32
   checkpoint (max absolute difference to eager, and to each other) and the real shape in bfloat16 (cosine).
6. ``throughput``: for each path (with the folded latent layer, as nvrag runs it), sequences of 512 and 4,096
   tokens (``--tokens`` per forward pass): tokens/s, peak device memory, and the share of the measured
   roofline the useful FLOPs reach.
7. ``latent``: the latent-attention layer's share of a forward pass (timed alone on the backbone's output).

    bash bench/gpu_check.sh                                  # on the GPU machine; JSON in $OUT/gpu_check.json
    python bench/gpu_check.py --shape tiny --device cpu --lengths 16,64 --tokens 128 --out /tmp/g.json

docs/performance.md ("The GPU check") says where its figures go.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realshape import SHAPES, forward_flops, matmul_peak, read_shards_seconds, write_checkpoint

from nvrag.model import NVEmbedModel, available_backends, load_model

# what the GPU machine lacks: importing any of these would fail there
FORBIDDEN = ("lancedb", "lance", "pyarrow", "gradio", "fastapi", "typer", "tokenizers", "transformers")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Report:
    """The JSON file, rewritten after every step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "errors": []}
        path.parent.mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2), encoding="utf-8")
        tmp.replace(self.path)

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """A step's results; an exception is recorded (with its traceback's end) and the run goes on."""
        found: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            yield found
        except Exception as exc:  # one failed step must not lose the others
            self.data["errors"].append({"step": name, "error": repr(exc), "trace": traceback.format_exc()[-2000:]})
        found["step_seconds"] = round(time.perf_counter() - start, 2)
        self.data[name] = found
        self.save()
        print(f"{name}: {json.dumps(found)}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # the process's, KiB → GiB


def inputs(lengths: list[int], vocab: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    """Random token ids, right-padded; the pool mask leaves out each row's first quarter (an instruction)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), 2, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, vocab, (n,), generator=g)
        mask[i, :n] = 1
    pool = mask.clone()
    for i, n in enumerate(lengths):
        pool[i, : n // 4] = 0
    return ids.to(device), mask.to(device), pool.to(device)


def timed(run: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Best wall seconds of ``repeat`` runs after one warm-up."""
    run()
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def agreement(model: NVEmbedModel, paths: list[str], batch: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Each path's vectors against eager's (the reference's arithmetic), and the folded latent layer nvrag runs
    by default on each path: max absolute difference and min cosine."""
    with torch.inference_mode():
        out = {p: model(*batch, backend=p) for p in paths}  # type: ignore[arg-type]
        out |= {f"{p}-folded": model(*batch, backend=p, folded=True) for p in paths}  # type: ignore[arg-type]
    ref = out["eager"]
    return {
        p: {
            "max_abs_diff": float((v - ref).abs().max()),
            "min_cosine": float(F.cosine_similarity(v, ref, dim=-1).min()),
        }
        for p, v in out.items()
        if p != "eager"
    }


def forward_seconds(
    model: NVEmbedModel, batch: tuple[torch.Tensor, ...], path: str, device: torch.device, repeat: int
) -> float:
    with torch.inference_mode():
        return timed(lambda: model(*batch, backend=path, folded=True), device, repeat)  # type: ignore[arg-type]


def latent_seconds(model: NVEmbedModel, batch: tuple[torch.Tensor, ...], device: torch.device, repeat: int) -> float:
    """The folded latent layer alone, on the backbone's output for ``batch`` (padded)."""
    ids, mask, _ = batch
    with torch.inference_mode():
        states = model.backbone(ids, model.backbone.padded_batch(mask, "sdpa", model.dtype))
        return timed(lambda: model.pool(states, folded=True), device, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/nvrag-realshape"), help="checkpoint folder")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON file written")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="real")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--lengths", default="512,4096", help="sequence lengths for the throughput step")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per forward pass (sequences x length)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peak-size", type=int, default=0, help="matmul size for the peak (0: 8,192 GPU, 2,048 CPU)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    report = Report(args.out)
    paths = [str(p) for p in available_backends(device, dtype)]
    lengths = [int(x) for x in args.lengths.split(",")]

    with report.step("machine") as m:
        m |= {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
        m |= {"paths": paths, "dtype": args.dtype, "shape": args.shape, "threads": torch.get_num_threads()}
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            m |= {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
        else:
            m["name"] = platform.processor() or platform.machine()

    with report.step("peak") as p:
        size = args.peak_size or (8192 if device.type == "cuda" else 2048)
        p["matmul_size"] = size
        p["flops_per_s"] = matmul_peak(device, dtype, size)
        p["tflops_per_s"] = round(p["flops_per_s"] / 1e12, 2)
    peak = float(report.data["peak"].get("flops_per_s") or float("nan"))

    with report.step("checkpoint") as c:
        c |= write_checkpoint(args.folder, args.shape, dtype=dtype, device=device)
        c["folder"] = str(args.folder)

    model: NVEmbedModel | None = None
    with report.step("load") as ld:
        ld["read_shards_seconds"] = round(read_shards_seconds(args.folder), 2)
        reset_peak(device)
        start = time.perf_counter()
        model = load_model(args.folder, dtype=dtype, device=device)
        sync(device)
        ld["seconds"] = round(time.perf_counter() - start, 2)
        ld["peak_gib"] = peak_gib(device)
        ld["vs_read"] = round(ld["seconds"] / max(ld["read_shards_seconds"], 1e-9), 2)

    with report.step("agreement") as a:
        tiny_folder = args.folder.parent / f"{args.folder.name}-tiny-float32"
        write_checkpoint(tiny_folder, "tiny", dtype=torch.float32, shards=2, device=device)
        tiny = load_model(tiny_folder, dtype=torch.float32, device=device)
        tiny_paths = [str(p) for p in available_backends(device, torch.float32)]
        a["tiny_float32"] = agreement(tiny, tiny_paths, inputs([5, 17, 33], 32000, device, 1))
        a["tiny_ok"] = all(r["max_abs_diff"] <= 1e-4 for r in a["tiny_float32"].values())
        if model is not None:
            vocab = model.config.vocab_size
            a[f"{args.shape}_{args.dtype}"] = agreement(model, paths, inputs([7, 64, 200], vocab, device, 2))
            a["real_ok"] = all(r["min_cosine"] >= 0.99 for r in a[f"{args.shape}_{args.dtype}"].values())

    for length in lengths:
        with report.step(f"throughput_{length}") as t:
            if model is None:
                raise RuntimeError("the model did not load")
            count = max(1, args.tokens // length)
            batch = inputs([length] * count, model.config.vocab_size, device, 3)
            flops = forward_flops(model.nvembed, [length] * count, folded=True)
            useful = sum(flops.values())
            t |= {"sequences": count, "tokens": count * length, "gflop": round(useful / 1e9, 3)}
            for path in paths:
                try:
                    reset_peak(device)
                    seconds = forward_seconds(model, batch, path, device, args.repeat)
                    t[path] = {
                        "seconds": round(seconds, 6),
                        "tokens_per_s": round(count * length / seconds, 1),
                        "peak_gib": peak_gib(device),
                        "roofline_share": round(useful / seconds / peak, 3),
                    }
                except torch.cuda.OutOfMemoryError:
                    t[path] = {"error": "out of memory"}
                    reset_peak(device)
            latent = latent_seconds(model, batch, device, args.repeat)
            whole = t.get("sdpa", {}).get("seconds")
            t["latent"] = {
                "seconds": round(latent, 4),
                "share_of_sdpa_pass": round(latent / whole, 3) if whole else None,
                "flop_share": round(flops["latent"] / useful, 3),
            }

    report.data["imported_unavailable_modules"] = sorted(m for m in FORBIDDEN if m in sys.modules)
    report.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report.save()
    print(json.dumps(report.data, indent=2))


if __name__ == "__main__":
    main()
