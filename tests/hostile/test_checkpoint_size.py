"""A checkpoint folder is the user's, but its shards can be anything: sizing one for the dtype choice reads a
bounded header and gives up (None: the default applies) on what is not a safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

from nvrag.embedder.nvembed import checkpoint_fp32_bytes


def shard(folder: Path, payload: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "model.safetensors"
    path.write_bytes(payload)
    return path


def test_headers_that_lie_or_are_not_json_give_no_size(tmp_path: Path) -> None:
    huge = (2**62).to_bytes(8, "little") + b"{}"  # a header "exabytes" long: never allocated or read
    assert checkpoint_fp32_bytes(shard(tmp_path / "huge", huge).parent) is None
    zero = (0).to_bytes(8, "little")
    assert checkpoint_fp32_bytes(shard(tmp_path / "zero", zero).parent) is None
    garbage = (16).to_bytes(8, "little") + b"\xff\xfe not json at all"
    assert checkpoint_fp32_bytes(shard(tmp_path / "garbage", garbage).parent) is None
    truncated = (4).to_bytes(8, "little") + b"{"
    assert checkpoint_fp32_bytes(shard(tmp_path / "truncated", truncated).parent) is None
    assert checkpoint_fp32_bytes(shard(tmp_path / "short", b"\x01").parent) is None


def test_a_header_of_the_wrong_shape_counts_as_float32(tmp_path: Path) -> None:
    for name, header in (("list", [1, 2]), ("odd", {"w": 5}), ("nodtype", {"w": {"shape": [1]}})):
        body = json.dumps(header).encode()
        path = shard(tmp_path / name, len(body).to_bytes(8, "little") + body)
        size = checkpoint_fp32_bytes(path.parent)
        assert size in (None, path.stat().st_size), name  # never an exception, never a made-up width
