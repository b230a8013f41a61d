"""A checkpoint folder is the user's, but its shards can be anything: sizing one for the dtype choice reads a
bounded header and gives up (None: the default applies) on what is not a safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

from nvrag.embedder.weights import checkpoint_fp32_bytes, loaded_weight_bytes


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
    nested = b"[" * 100_000 + b"]" * 100_000
    assert checkpoint_fp32_bytes(shard(tmp_path / "nested", len(nested).to_bytes(8, "little") + nested).parent) is None
    for case in ("huge", "zero", "garbage", "truncated", "short", "nested"):
        for dtype in ("int8", "bfloat16"):  # the model pool's size: unknown, never an exception
            assert loaded_weight_bytes(tmp_path / case, dtype) is None, (case, dtype)


def test_shapes_that_are_not_lists_of_sizes_give_no_pool_size(tmp_path: Path) -> None:
    for name, shape in (("text", "big"), ("negative", [-1, 4]), ("floats", [1.5, 2]), ("nested", [[1], 2])):
        body = json.dumps({"model.layers.0.mlp.up_proj.weight": {"dtype": "BF16", "shape": shape}}).encode()
        path = shard(tmp_path / name, len(body).to_bytes(8, "little") + body)
        assert loaded_weight_bytes(path.parent, "int8") is None, name
    body = json.dumps({"w": {"dtype": "BF16", "shape": [10**30, 10**30]}}).encode()  # absurd, but a size
    path = shard(tmp_path / "absurd", len(body).to_bytes(8, "little") + body)
    assert loaded_weight_bytes(path.parent, "bfloat16") == 2 * 10**60  # larger than any budget: refused there


def test_a_header_of_the_wrong_shape_counts_as_float32(tmp_path: Path) -> None:
    for name, header in (("list", [1, 2]), ("odd", {"w": 5}), ("nodtype", {"w": {"shape": [1]}})):
        body = json.dumps(header).encode()
        path = shard(tmp_path / name, len(body).to_bytes(8, "little") + body)
        size = checkpoint_fp32_bytes(path.parent)
        assert size in (None, path.stat().st_size), name  # never an exception, never a made-up width


def test_a_config_that_claims_absurd_sizes_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    """A --model-path folder's config.json is read first: a billion layers must not become a billion modules or
    name-map entries (time, memory), for either model; one line names the field and the bound."""
    import pytest

    from nvrag.errors import CheckpointError
    from nvrag.model.bert_numpy import load_numpy_bert
    from nvrag.model.loading import read_config
    from tests.conftest import NVEMBED_TINY
    from tests.model.test_bert import CONFIG

    bert = tmp_path / "bert"
    bert.mkdir()
    for field, value in (("num_hidden_layers", 10**9), ("hidden_size", 0), ("vocab_size", -3)):
        (bert / "config.json").write_text(json.dumps({**CONFIG, field: value}), encoding="utf-8")
        with pytest.raises(CheckpointError, match=rf"config.json: {field} is {value}; it must be between 1 and"):
            load_numpy_bert(bert)
    nvembed = tmp_path / "nvembed"
    nvembed.mkdir()
    data = json.loads((NVEMBED_TINY / "config.json").read_text(encoding="utf-8"))
    data["text_config"]["num_hidden_layers"] = 10**9
    (nvembed / "config.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"text_config: num_hidden_layers is 1000000000"):
        read_config(nvembed)


def test_a_config_json_that_is_huge_nested_or_not_text_is_one_line(tmp_path: Path) -> None:
    import pytest

    from nvrag.errors import CheckpointError
    from nvrag.model.bert_config import read_bert_config
    from nvrag.model.config import CONFIG_MAX_BYTES
    from nvrag.model.loading import read_config

    cases = {
        "huge": (b" " * (CONFIG_MAX_BYTES + 1), r"over 1024 KiB; not a model config"),
        "nested": (b"[" * 100_000 + b"]" * 100_000, r"cannot be read as JSON \(RecursionError\)"),
        "binary": (b"\xff\xfe\x00garbage", r"cannot be read as JSON \(UnicodeDecodeError\)"),
        "list": (b"[1, 2]", r"expected a JSON object"),
    }
    for name, (payload, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_bytes(payload)
        for read in (read_config, read_bert_config):
            with pytest.raises(CheckpointError, match=message):
                read(folder)
    with pytest.raises(CheckpointError, match=r"no config.json"):
        read_bert_config(tmp_path)
