"""A checkpoint's weights without loading them: their float32 size and a cheap fingerprint. Torch-free."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def checkpoint_fp32_bytes(folder: Path) -> int | None:
    """What a checkpoint's weights take in float32: the shards' total size, scaled by their stored dtype's width
    (read from the first shard's safetensors header). None where the folder has no readable shards."""
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return None
    try:
        with shards[0].open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if not 0 < header_len <= 100_000_000:
                return None
            header = json.loads(f.read(header_len))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    widths = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
    tensors = [v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    stored = widths.get(str(tensors[0].get("dtype")), 4) if tensors else 4
    return sum(p.stat().st_size for p in shards) * 4 // stored


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


def loaded_weight_bytes(folder: Path, compute_dtype: str) -> int | None:
    """What a checkpoint's weights take once loaded in ``compute_dtype`` (its float32 size scaled): what a model
    pool counts against its memory budget. None where the folder has no readable shards."""
    fp32 = checkpoint_fp32_bytes(folder)
    return None if fp32 is None else fp32 * DTYPE_BYTES.get(compute_dtype, 4) // 4


SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
)


def weights_fingerprint(folder: Path) -> str:
    """A cheap identity of a checkpoint: config, shard index, and each shard's size, header and edges.

    Hashing all 15.7 GB of the real weights would take minutes; this reads a few MiB and still tells apart
    checkpoints that differ in shape, dtype or (in practice) content.
    """
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        path = folder / name
        if path.is_file():
            digest.update(path.read_bytes())
    # sentence-transformers' files change what a decoder embedder computes (pooling, prompts, length); folders
    # without them (NV-Embed's) keep the fingerprints they always had
    for name in SENTENCE_TRANSFORMERS_FILES:
        path = folder / name
        if path.is_file():
            digest.update(f"{name}:".encode() + path.read_bytes()[: 1 << 20])
    for shard in sorted(folder.glob("*.safetensors")):
        size = shard.stat().st_size
        digest.update(f"{shard.name}:{size}".encode())
        with shard.open("rb") as f:
            header = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header, 1 << 24)))
            digest.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            digest.update(f.read(1 << 20))
    return "sha256:" + digest.hexdigest()[:16]
