"""A checkpoint's weights without loading them: their size in a dtype and a cheap fingerprint. Torch-free."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100_000_000
WIDTHS = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
# the decoder and encoder layers' matmul weights: what --dtype int8 stores as int8, and a widened bfloat16 model
# in bfloat16 (the norms stay in the dtype the rest computes in)
QUANTISED = re.compile(r"(^|\.)layers?\.\d+\.")
# NV-Embed's latent layer's matmul weights: kept in bfloat16 by a widened bfloat16 model and by int8 too
LATENT_MATMUL = re.compile(
    r"^latent_attention_model\.cross_attend_blocks\.\d\.fn\.(to_q|to_kv|to_out|net\.[02])\.weight$"
)
# a decoder's token embeddings: kept in bfloat16 by a widened model and by int8 (the rows looked up are widened)
EMBED_TABLE = re.compile(r"(^|\.)embed_tokens\.weight$")
INT8_ROW_BYTES = 4 + 8  # each output row's float32 scale and oneDNN's int64 zero point


def _tensors(shard: Path) -> list[tuple[str, dict[str, Any]]] | None:
    """(name, entry) of each tensor in a safetensors header; None where it cannot be read."""
    try:
        with shard.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if not 0 < header_len <= MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(header_len))
    except (OSError, ValueError, RecursionError):  # (a header nested 100,000 deep is not a checkpoint)
        return None
    if not isinstance(header, dict):
        return None
    return [(k, v) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]


def checkpoint_fp32_bytes(folder: Path) -> int | None:
    """What a checkpoint's weights take in float32: the shards' total size, scaled by their stored dtype's width
    (read from the first shard's safetensors header). None where the folder has no readable shards."""
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return None
    tensors = _tensors(shards[0])
    if tensors is None:
        return None
    stored = WIDTHS.get(str(tensors[0][1].get("dtype")), 4) if tensors else 4
    return sum(p.stat().st_size for p in shards) * 4 // stored


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def loaded_weight_bytes(
    folder: Path, compute_dtype: str, rest_dtype: str | None = None, released: re.Pattern[str] | None = None
) -> int | None:
    """What a checkpoint's weights take once loaded in ``compute_dtype``, tensor by tensor from every shard's
    header: what a model pool counts against its memory budget. Each layer's matmul weights take
    ``compute_dtype``'s width (int8: one byte a parameter plus ``INT8_ROW_BYTES`` a row), the token embeddings and
    NV-Embed's latent layer the compute dtype's (bfloat16 for int8), the rest (norms) ``rest_dtype``'s (None:
    the compute dtype's; bfloat16 for int8): int8 and a widened bfloat16 model (model/widened.py) keep the rest
    in float32. Tensors whose names match ``released`` are freed once loaded (NV-Embed's folded latent
    projections) and not counted. None where a shard cannot be read."""
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return None
    int8 = compute_dtype == "int8"
    width = DTYPE_BYTES.get(rest_dtype or ("bfloat16" if int8 else compute_dtype), 4)
    matmul_width = DTYPE_BYTES.get(compute_dtype, 4)
    total = 0
    for shard in shards:
        tensors = _tensors(shard)
        if tensors is None:
            return None
        for name, entry in tensors:
            shape = entry.get("shape")
            if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
                return None
            if released is not None and released.search(name):
                continue
            count = math.prod(shape)
            matmul = len(shape) == 2 and name.endswith(".weight") and QUANTISED.search(name)
            if matmul and int8:
                total += count + shape[0] * INT8_ROW_BYTES
            elif matmul:
                total += count * matmul_width
            elif LATENT_MATMUL.match(name) or EMBED_TABLE.search(name):
                total += count * (DTYPE_BYTES["bfloat16"] if int8 else matmul_width)
            else:
                total += count * width
    return total


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
