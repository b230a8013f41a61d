"""NV-Embed-v2 at its real shape on this machine's CPU: `nvrag serve` and `nvrag embed` on a random checkpoint
of the real shape (bench/realshape.py: 7.85 B parameters, bfloat16, 4 shards, 15.7 GB, the real names and
config; the fixture's Mistral tokenizer), each figure against this machine's own limits measured in the same run.

    python bench/nvembed_realshape.py --folder /tmp/nvembed-real [--dtype bfloat16] [--queries 8] [--json out.json]

The checkpoint is written once to --folder (about 2 minutes here) and reused. Then:

- limits: the bf16 (or float32) matmul peak (best square matmul of 1,024-4,096; float32's on a CPU without
  bfloat16 arithmetic, where nvrag computes bfloat16 weights in float32), memory read bandwidth, and the
  time to read the shards from the page cache (read into one reused buffer: the floor for loading them);
- `nvrag serve --model-path`: start to ready (/ready answers 200 only after a real forward pass), the loader's
  own time (the server's log), peak RSS (VmHWM), the warm latency of a one-line query with its instruction
  through /v1/embeddings (median and best of --queries), the first query after ready, and documents of 512 tokens
  (--documents per request, 4) in tokens/s; each latency against its roofline: max(useful FLOPs / matmul peak, weight
  bytes / bandwidth);
- `nvrag embed --query` one line, whole process: wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realshape import SHAPES, forward_flops, matmul_peak, threads, write_checkpoint

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO.parent / "shared" / "fixtures" / "nvembed-tiny"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
QUERY = "how does caffeine affect sleep quality in adults"
INSTRUCTION = "Given a question, retrieve passages that answer the question"
# int8 (--dtype int8): loaded in bfloat16, matmul weights converted (model/int8.py); rooflines use the bf16 peak
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "int8": torch.bfloat16}


def widened(dtype: str) -> bool:
    """bfloat16 on a CPU without bfloat16 arithmetic, int8 on one without int8 dot products: narrow weights,
    float32 arithmetic (model/widened.py), so the roofline is float32's peak and nothing is prepacked."""
    from nvrag.embedder.dtypes import int8_dot_products, widened_bf16

    return (dtype == "bfloat16" and widened_bf16("cpu")) or (dtype == "int8" and not int8_dot_products())


def widen_int8(module: torch.nn.Module) -> tuple[int, float]:
    """What ``quantize(wide=True)`` makes of a layer, for layers already widened: each bfloat16 weight as int8
    rows with their scales (model/int8.quantize_weight); (layers, seconds)."""
    from nvrag.model.int8 import quantize_weight
    from nvrag.model.widened import WideLinear

    start, done = time.perf_counter(), 0
    for layer in module.modules():
        if isinstance(layer, WideLinear) and layer.weight.dtype != torch.int8:
            layer.weight, scale = quantize_weight(layer.weight)
            layer.scale = scale.reshape(1, -1)
            done += 1
    return done, time.perf_counter() - start


def read_seconds(folder: Path) -> float:
    """Seconds to read every shard through one reused 64 MiB buffer (best of 3: the page cache's speed)."""
    buffer = memoryview(bytearray(64 << 20))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for shard in sorted(folder.glob("*.safetensors")):
            with shard.open("rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass
        best = min(best, time.perf_counter() - start)
    return best


def bandwidth() -> float:
    """Bytes/s of summing a 2 GiB float32 tensor (best of 3): how fast the weights can stream from memory."""
    x = torch.ones(1 << 29)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_count(folder: Path, text: str, special: bool = True) -> int:
    from tokenizers import Tokenizer

    return len(Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=special).ids)


def documents(folder: Path, count: int = 4, tokens: int = 512) -> tuple[list[str], list[int]]:
    """``count`` different texts of about ``tokens`` tokens each (BOS and EOS included), and their exact lengths."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    words = ["retrieval", "embedding", "passage", "query", "vector", "index", "model", "search"]
    texts, lengths = [], []
    for i in range(count):
        chosen: list[str] = []
        while True:
            word = words[(i * 3 + len(chosen)) % len(words)]
            if len(tokenizer.encode(" ".join([*chosen, word]) + "</s>").ids) > tokens:
                break
            chosen.append(word)
        texts.append(" ".join(chosen))
        lengths.append(len(tokenizer.encode(texts[-1] + "</s>").ids))
    return texts, lengths


def serve(
    folder: Path, dtype: str, queries: int, db: Path, env: dict[str, str], log: Path, count: int, dimension: int
) -> dict[str, Any]:
    """`nvrag serve`: start to ready, the first query after ready (the weights are prepacked in the background
    from then on), warm queries once the server says they are packed, documents, peak RSS."""
    port = free_port()
    command = [sys.executable, "-m", "nvrag", "serve", "--model-path", str(folder), "--dtype", dtype]
    command += ["--port", str(port), "--db", str(db)]
    start = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = None
        while ready is None:
            if process.poll() is not None:
                raise SystemExit(f"nvrag serve exited: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=5) as response:
                    if response.status == 200:
                        ready = time.perf_counter() - start
            except OSError:
                time.sleep(0.1)
        query = {"input": QUERY, "model": "nv-embed-v2", "input_type": "query", "instruction": INSTRUCTION}
        first, answer = post(f"{base}/v1/embeddings", query)
        assert len(answer["data"][0]["embedding"]) == dimension
        deadline = time.monotonic() + 600
        packs = dtype in ("bfloat16", "int8") and not widened(dtype)
        while packs and "prepacked" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        packed = time.perf_counter() - start
        warm = [post(f"{base}/v1/embeddings", query)[0] for _ in range(queries)]
        body = {"input": documents(folder, count)[0], "model": "nv-embed-v2"}
        documents_seconds = min(post(f"{base}/v1/embeddings", body)[0] for _ in range(2))
        peak = peak_rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {
        "ready_seconds": round(ready, 2),
        "first_query_seconds": round(first, 3),
        "prepacked_after_seconds": round(packed, 1),
        "warm_query_seconds": {"median": round(statistics.median(warm), 3), "best": round(min(warm), 3)},
        "documents_seconds": round(documents_seconds, 3),
        "peak_rss_mib": round(peak),
        "log": [line for line in log.read_text().splitlines() if "model" in line.lower() or "prepacked" in line],
    }


CATEGORIES = {
    "matmul": (
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "mkldnn::_linear_pointwise",
        "onednn::qlinear_pointwise",
        "nvrag::widemm",  # the widened product's compiled kernel (model/_widemm.c), a named range per call
    ),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_softmax"),
}


def where_time_goes(model: Any, batch: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """One forward pass under the profiler: its wall time, the ops' own time by kind, the matmuls by shape,
    and the latent layer timed alone."""
    from torch.profiler import profile

    with torch.inference_mode(), profile(record_shapes=True) as prof:
        start = time.perf_counter()
        model(*batch, folded=True)
        wall = time.perf_counter() - start
    kinds: dict[str, float] = {"matmul": 0.0, "attention": 0.0, "other ops": 0.0}
    shapes: dict[str, float] = {}
    for event in prof.key_averages(group_by_input_shape=True):
        seconds = event.self_cpu_time_total / 1e6
        kind = next((k for k, names in CATEGORIES.items() if event.key.split(" [")[0] in names), "other ops")
        kinds[kind] += seconds
        if kind == "matmul" and seconds > 0.005:
            shape = f" {event.input_shapes[:2]}" if event.input_shapes else ""
            shapes[f"{event.key}{shape}"] = round(seconds, 3)
    kinds["framework (wall - ops)"] = wall - sum(kinds.values())
    ids, mask, _ = batch
    with torch.inference_mode():
        states = model.backbone(ids, model.backbone.padded_batch(mask, "sdpa", model.dtype))
        start = time.perf_counter()
        model.pool(states, folded=True)
        latent = time.perf_counter() - start
    return {
        "wall_seconds": round(wall, 3),
        "by_kind_seconds": {k: round(v, 3) for k, v in kinds.items()},
        "latent_layer_seconds": round(latent, 4),
        "matmul_by_shape_seconds": dict(sorted(shapes.items(), key=lambda kv: -kv[1])[:8]),
    }


def in_process(folder: Path, dtype: torch.dtype, query_tokens: int, queries: int, int8: bool = False) -> dict[str, Any]:
    """nvrag's loader and model in this process: load time, a query's forward pass with plain and with
    prepacked weights (median of ``queries``), and where each one's time goes; ``int8``: with int8 weights
    instead of bfloat16 ones (a one-shot command's plain layers, then a server's packed ones), and the cosine of
    the int8 vectors to the plain ones."""
    from nvrag.model import load_model
    from nvrag.model.int8 import pack_int8, quantize
    from nvrag.model.prepack import prepack
    from nvrag.model.widened import widen

    start = time.perf_counter()
    if dtype == torch.bfloat16 and widened("bfloat16"):  # as nvrag loads it on such a CPU
        model = load_model(folder, dtype=torch.float32, matmul_dtype=torch.bfloat16)
        widen(model)
    else:
        model = load_model(folder, dtype=dtype)
    loaded = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 32000, (1, query_tokens), generator=g)
    mask = torch.ones_like(ids)
    pool = mask.clone()
    pool[0, : query_tokens // 2] = 0
    batch = (ids, mask, pool)

    def median_query() -> float:
        with torch.inference_mode():
            model(*batch, folded=True)
            times = []
            for _ in range(queries):
                t = time.perf_counter()
                model(*batch, folded=True)
                times.append(time.perf_counter() - t)
        return statistics.median(times)

    plain = median_query()
    plain_profile = where_time_goes(model, batch)
    if int8:
        texts = torch.randint(3, 32000, (4, 512), generator=g)
        full = torch.ones_like(texts)
        with torch.inference_mode():
            before = [model(*batch, folded=True), model(texts, full, full.clone(), folded=True)]
        layers, seconds = widen_int8(model.backbone) if widened("int8") else quantize(model.backbone)
        with torch.inference_mode():
            after = [model(*batch, folded=True), model(texts, full, full.clone(), folded=True)]
        cos = [
            float(c) for b, a in zip(before, after, strict=True) for c in torch.cosine_similarity(b.float(), a.float())
        ]
        one_shot = median_query()
        _, pack_seconds = pack_int8(model.backbone)  # what a server does once ready
        return {
            "load_seconds": round(loaded, 2),
            "query_plain_seconds": round(plain, 3),
            "int8_layers": layers,
            "int8_convert_seconds": round(seconds, 1),
            "query_int8_one_shot_seconds": round(one_shot, 3),
            "int8_pack_seconds": round(pack_seconds, 1),
            "query_int8_seconds": round(median_query(), 3),
            "cosine_int8_to_bf16": {"min": round(min(cos), 5), "values": [round(c, 5) for c in cos]},
            "plain": plain_profile,
        }
    layers, pack_seconds = prepack(model)  # what a server packs: the decoder and the latent feed-forward
    packed = median_query()
    result = {
        "load_seconds": round(loaded, 2),
        "query_plain_seconds": round(plain, 3),
        "prepacked_layers": layers,
        "prepack_seconds": round(pack_seconds, 1),
        "query_prepacked_seconds": round(packed, 3),
        "plain": plain_profile,
        "prepacked": where_time_goes(model, batch),
    }
    return result


def embed_once(folder: Path, dtype: str, env: dict[str, str]) -> dict[str, Any]:
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "done.returncode and sys.exit(done.stderr[-3000:]); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    command = [sys.executable, "-m", "nvrag", "embed", QUERY, "--query", "--instruction", INSTRUCTION]
    command += ["--model-path", str(folder), "--dtype", dtype]
    done = subprocess.run([sys.executable, "-c", wrapper, *command], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    seconds, peak = done.stdout.split()
    return {"seconds": round(float(seconds), 2), "peak_rss_mib": round(float(peak))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="where the real-shape checkpoint is (or goes)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="real")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--documents", type=int, default=4, help="512-token documents in the timed request")
    parser.add_argument("--json", dest="json_out", type=Path)
    parser.add_argument("--in-process", type=int, help=argparse.SUPPRESS)  # query tokens: the child's run
    args = parser.parse_args()
    torch.set_num_threads(threads())
    if args.in_process:
        result = in_process(args.folder, DTYPES[args.dtype], args.in_process, args.queries, args.dtype == "int8")
        print(json.dumps(result))
        return
    written = write_checkpoint(args.folder, args.shape, dtype=torch.bfloat16)
    for name in TOKENIZER_FILES:
        if not (args.folder / name).exists():
            shutil.copy(FIXTURE / name, args.folder / name)
    config = SHAPES[args.shape]
    arithmetic = torch.float32 if widened(args.dtype) else DTYPES[args.dtype]
    peak = max(matmul_peak(torch.device("cpu"), arithmetic, n) for n in (1024, 2048, 4096))
    limits = {"matmul_gflops": round(peak / 1e9), "bandwidth_gb_s": round(bandwidth() / 1e9, 1)}
    limits["matmul_dtype"] = str(arithmetic).removeprefix("torch.")
    limits["read_shards_seconds"] = round(read_seconds(args.folder), 2)
    weight_bytes = written["bytes"] * {"float32": 2.0, "bfloat16": 1.0, "int8": 0.5}[args.dtype]
    query_tokens = token_count(args.folder, f"Instruct: {INSTRUCTION}\nQuery: {QUERY}</s>")
    # the mean leaves the instruction out (its length without BOS, counted from the first position: NVEMBED.md)
    query_pooled = query_tokens - token_count(args.folder, f"Instruct: {INSTRUCTION}\nQuery: ", special=False)
    doc_lengths = documents(args.folder, args.documents)[1]

    def roofline(lengths: list[int], pooled: list[int] | None = None) -> float:
        compute = sum(forward_flops(config, lengths, folded=True, pooled=pooled).values()) / peak
        return max(compute, weight_bytes / (limits["bandwidth_gb_s"] * 1e9))

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # Order matters on a machine whose memory holds the shards once: prepacked weights are anonymous memory
    # (15 GB), so a phase that packs evicts the page cache. `nvrag embed` (no packing) first, then the model
    # in a process of its own, then the page cache refilled (timed as limits' read), then the server.
    embedded = embed_once(args.folder, args.dtype, env)
    child = [sys.executable, __file__, "--folder", str(args.folder), "--dtype", args.dtype]
    child += ["--queries", str(args.queries), "--in-process", str(query_tokens)]
    done = subprocess.run(child, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the in-process run failed:\n{done.stderr[-3000:]}")
    model = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(model, indent=2), flush=True)
    read_seconds(args.folder)
    with tempfile.TemporaryDirectory(prefix="nvrag-realshape-") as tmp:
        served = serve(
            args.folder, args.dtype, args.queries, Path(tmp) / "db", env, Path(tmp) / "serve.log", args.documents,
            config.latent.latent_dim,
        )  # fmt: skip
    query_roofline = roofline([query_tokens], [query_pooled])
    doc_roofline = roofline(doc_lengths)
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": threads(),
            "torch": torch.__version__,
        },
        "checkpoint": written,
        "dtype": args.dtype,
        "limits": limits,
        "query_tokens": query_tokens,
        "document_tokens": doc_lengths,
        "in_process": model,
        "serve": served,
        "embed": embedded,
        "ratios": {
            "warm_query_vs_roofline": round(served["warm_query_seconds"]["median"] / query_roofline, 2),
            "forward_plain_vs_roofline": round(model["query_plain_seconds"] / query_roofline, 2),
            "forward_prepacked_or_int8_vs_roofline": round(
                model.get("query_prepacked_seconds", model.get("query_int8_seconds", 0)) / query_roofline, 2
            ),
            "load_vs_read_shards": round(model["load_seconds"] / max(limits["read_shards_seconds"], 0.01), 2),
            "first_query_vs_warm": round(served["first_query_seconds"] / served["warm_query_seconds"]["median"], 2),
            "documents_vs_roofline": round(served["documents_seconds"] / doc_roofline, 2),
            "documents_tokens_per_s": round(sum(doc_lengths) / served["documents_seconds"]),
            "peak_rss_minus_weights_mib": round(served["peak_rss_mib"] - weight_bytes / 2**20),
        },
        "rooflines": {"query_seconds": round(query_roofline, 3), "documents_seconds": round(doc_roofline, 3)},
    }
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
