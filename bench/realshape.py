"""NV-Embed checkpoints of any shape in the real format, written without the model in memory, and the FLOPs a
forward pass does. Shared by bench/nvembed_realshape.py (CPU) and bench/gpu_check.py (GPU).

The real NV-Embed-v2 (``SHAPES["real"]``): a bidirectional Mistral-7B (32 layers, hidden 4,096, 32 heads of 128,
8 key/value heads, intermediate 14,336, vocabulary 32,000) and the latent-attention layer (512 latents, 8 heads
of 4,096, GEGLU feed-forward of 16,384): 7.85 B parameters, 15.7 GB in bfloat16, 4 safetensors shards with the
reference's tensor names (``embedding_model.*``, ``latent_attention_model.*``) and its config.json layout.

Weights are N(0, 0.02), norms 1, biases 0: random, but every tensor has the real name, shape and dtype, so
loading, memory and speed are the real model's. Only torch, safetensors and nvrag.model are imported (the GPU
machine has nothing else).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nvrag.model import LatentConfig, NVEmbedConfig, NVEmbedModel, nvembed_text_config, tiny_config
from nvrag.model.loading import INDEX_FILE, name_map
from nvrag.model.skeleton import skeleton

SHAPES: dict[str, NVEmbedConfig] = {
    "tiny": tiny_config(),
    # the real structure scaled down: every tensor kind, shards, GQA, the latent layer; for dry runs
    "small": NVEmbedConfig(
        text=nvembed_text_config(
            hidden_size=256, intermediate_size=896, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2
        ),
        latent=LatentConfig(
            num_latents_value=64, num_cross_heads=4, cross_dim_head=256, hidden_dim=256, latent_dim=256
        ),
    ),
    "real": NVEmbedConfig(),  # Mistral-7B + 512 latents x 8 heads x 4,096: 7.85 B parameters
}
DONE_FILE = "nvrag-realshape.json"  # written last: a folder with it is complete


def hf_config(config: NVEmbedConfig, dtype: torch.dtype) -> dict[str, Any]:
    """config.json as NV-Embed-v2's repository has it (the keys nvrag and the reference read). The real one
    stores only the latent layer's model_type (every value is a code default, NVEMBED.md): so does this one
    for the real shape; other shapes store their values, as the test fixture does."""
    t, lat = config.text, config.latent
    dtype_name = str(dtype).removeprefix("torch.")
    latent = {} if lat == LatentConfig() else asdict(lat)
    return {
        "_name_or_path": "nvidia/NV-Embed-v2 (random weights of its shape)",
        "add_eos": True,
        "add_pad_token": True,
        "architectures": ["NVEmbedModel"],
        "auto_map": {
            "AutoConfig": "configuration_nvembed.NVEmbedConfig",
            "AutoModel": "modeling_nvembed.NVEmbedModel",
        },
        "hidden_size": t.hidden_size,
        "is_mask_instruction": True,
        "latent_attention_config": {"model_type": "latent_attention", **latent},
        "mask_type": "b",
        "model_type": "nvembed",
        "padding_side": "right",
        "text_config": {
            "_name_or_path": "nvidia/NV-Embed-v2",
            "architectures": ["MistralModel"],
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": t.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": t.intermediate_size,
            "max_position_embeddings": 32768,
            "model_type": "bidir_mistral",
            "num_attention_heads": t.num_attention_heads,
            "num_hidden_layers": t.num_hidden_layers,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope.theta,
            "sliding_window": 4096,  # ignored by NV-Embed (NVEMBED.md, quirk 8)
            "tie_word_embeddings": False,
            "torch_dtype": dtype_name,
            "vocab_size": t.vocab_size,
        },
        "torch_dtype": dtype_name,
        "transformers_version": "4.42.4",
    }


def _shapes(config: NVEmbedConfig) -> dict[str, tuple[torch.Size, str]]:
    """Checkpoint name → (shape, our name), in the model's order."""
    with skeleton():
        model = NVEmbedModel(config)
    names = name_map(config)
    return {names[ours]: (p.shape, ours) for ours, p in model.named_parameters()}


def _fill(name: str, shape: torch.Size, dtype: torch.dtype, device: torch.device, g: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight") or name.endswith("norm_context.weight"):
        return torch.ones(shape, dtype=dtype, device=device)
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02, generator=g)


def is_complete(folder: Path, shape: str, dtype: torch.dtype) -> bool:
    done = folder / DONE_FILE
    if not done.is_file():
        return False
    recorded = json.loads(done.read_text(encoding="utf-8"))
    return bool(recorded.get("shape") == shape and recorded.get("dtype") == str(dtype))


def write_checkpoint(
    folder: Path,
    shape: str,
    *,
    dtype: torch.dtype = torch.bfloat16,
    shards: int = 4,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Write a random checkpoint of ``shape`` to ``folder`` once (a complete folder is reused): config.json,
    ``shards`` safetensors files of about equal size and the index. Tensors are made one at a time on ``device``
    and each shard is saved and freed before the next: peak memory is one shard. Returns what was written."""
    if is_complete(folder, shape, dtype):
        return {**json.loads((folder / DONE_FILE).read_text(encoding="utf-8")), "reused": True}
    start = time.perf_counter()
    config = SHAPES[shape]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_FILE).unlink(missing_ok=True)
    shapes = _shapes(config)
    size = {name: s.numel() * torch.empty((), dtype=dtype).element_size() for name, (s, _) in shapes.items()}
    total = sum(size.values())
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    g = torch.Generator(device=device).manual_seed(seed)
    weight_map: dict[str, str] = {}
    pending: dict[str, torch.Tensor] = {}
    written, shard = 0, 0
    for name, (tensor_shape, _) in shapes.items():
        pending[name] = _fill(name, tensor_shape, dtype, torch.device(device), g).cpu()
        written += size[name]
        weight_map[name] = files[shard]
        if written >= total * (shard + 1) / shards and shard < shards - 1:
            save_file(pending, str(folder / files[shard]), metadata={"format": "pt"})
            pending, shard = {}, shard + 1
    save_file(pending, str(folder / files[shard]), metadata={"format": "pt"})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(hf_config(config, dtype), indent=2), encoding="utf-8")
    record = {
        "shape": shape,
        "dtype": str(dtype),
        "parameters": sum(s.numel() for s, _ in shapes.values()),
        "bytes": total,
        "shards": shards,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (folder / DONE_FILE).write_text(json.dumps(record), encoding="utf-8")
    return {**record, "reused": False}


def read_shards_seconds(folder: Path) -> float:
    """Seconds to read every shard's bytes (from the page cache after a first read): the floor for loading."""
    start = time.perf_counter()
    for shard in sorted(folder.glob("*.safetensors")):
        with shard.open("rb") as f:
            while f.read(64 << 20):
                pass
    return time.perf_counter() - start


def forward_flops(
    config: NVEmbedConfig, lengths: Sequence[int], *, folded: bool = False, pooled: Sequence[int] | None = None
) -> dict[str, float]:
    """Matmul FLOPs of one forward pass over sequences of ``lengths`` real tokens (multiply-add = 2), split as
    ``decoder`` (projections and MLP, per token), ``attention`` (QKᵀ and PV, per pair of tokens of a sequence)
    and ``latent`` (the latent layer per token the mean keeps, ``pooled`` (default: every token): query and
    output projections, scores and values over the latents, the GEGLU feed-forward; ``folded``: the two folded
    matrices instead of the first four). A query's instruction is left out of the mean, so the last decoder
    layer's output projection and MLP and the latent layer's work on it are not useful work (nvrag skips them:
    model/pooling.read_tokens); its keys and values are."""
    t, lat = config.text, config.latent
    tokens = sum(lengths)
    kv = t.head_dim * t.num_key_value_heads
    per_layer = 2 * (
        2 * t.hidden_size * t.hidden_size + 2 * t.hidden_size * kv + 3 * t.hidden_size * t.intermediate_size
    )
    inner = lat.num_cross_heads * lat.cross_dim_head
    heads_latents = lat.num_cross_heads * lat.num_latents_value
    attend = (
        2 * 2 * lat.hidden_dim * heads_latents
        if folded
        else 2 * (2 * lat.hidden_dim * inner + 2 * lat.num_latents_value * inner)
    )
    geglu = 2 * (lat.hidden_dim * 8 * lat.hidden_dim + 4 * lat.hidden_dim * lat.hidden_dim)
    pairs = sum(n * n for n in lengths)
    kept = sum(lengths if pooled is None else pooled)
    finished = 2 * (t.hidden_size * t.hidden_size + 3 * t.hidden_size * t.intermediate_size)  # o and the MLP
    return {
        "decoder": float(per_layer * t.num_hidden_layers * tokens - finished * (tokens - kept)),
        "attention": float(4 * t.hidden_size * pairs * t.num_hidden_layers),
        "latent": float((attend + geglu) * kept),
    }


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, seconds: float = 1.0) -> float:
    """FLOP/s of a square ``size`` matmul in ``dtype`` on ``device``, best of runs lasting about ``seconds``:
    the machine's own roofline for the model's matmuls, measured in the same run as them."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b
    sync()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        a @ b
        sync()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2.0 * size**3 / best


def threads() -> int:
    """The cores this process may run on (affinity), as the embedder chooses them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
