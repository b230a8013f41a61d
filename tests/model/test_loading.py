"""Loading the sharded checkpoint: every key and shape checked, errors that name what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nvrag.errors import CheckpointError
from nvrag.model import load_model, name_map, tiny_config
from tests.conftest import NVEMBED_TINY

SHARD2 = "model-00002-of-00002.safetensors"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(NVEMBED_TINY, folder)
    return folder


def rewrite_shard(folder: Path, edit: dict[str, torch.Tensor | None]) -> None:
    tensors = load_file(str(folder / SHARD2))
    for key, value in edit.items():
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    save_file(tensors, str(folder / SHARD2))


def test_the_name_map_covers_every_checkpoint_key_once() -> None:
    index = json.loads((NVEMBED_TINY / "model.safetensors.index.json").read_text(encoding="utf-8"))
    mapped = name_map(tiny_config())
    assert sorted(mapped.values()) == sorted(index["weight_map"])
    assert len(set(mapped.values())) == len(mapped) == 34


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_loads_in_the_requested_dtype(dtype: torch.dtype) -> None:
    model = load_model(NVEMBED_TINY, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert not any(p.requires_grad for p in model.parameters())
    assert model.pool._kv is not None  # the latent keys/values are ready before the first input


def test_missing_shard(checkpoint: Path) -> None:
    (checkpoint / SHARD2).unlink()
    with pytest.raises(
        CheckpointError, match=f"shard files listed in model.safetensors.index.json are missing: {SHARD2}"
    ):
        load_model(checkpoint)


def test_missing_key(checkpoint: Path) -> None:
    key = "latent_attention_model.cross_attend_blocks.0.norm_context.bias"
    rewrite_shard(checkpoint, {key: None})
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text(encoding="utf-8"))
    del index["weight_map"][key]
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"missing keys: {key}"):
        load_model(checkpoint)


def test_unexpected_key(checkpoint: Path) -> None:
    rewrite_shard(checkpoint, {"lm_head.weight": torch.zeros(2, 2)})
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text(encoding="utf-8"))
    index["weight_map"]["lm_head.weight"] = SHARD2
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"unexpected keys: lm_head\.weight"):
        load_model(checkpoint)


def test_wrong_shape(checkpoint: Path) -> None:
    rewrite_shard(checkpoint, {"latent_attention_model.latents": torch.zeros(8, 64)})
    with pytest.raises(
        CheckpointError, match=r"latent_attention_model.latents has shape \[8, 64\], config.json implies \[16, 64\]"
    ):
        load_model(checkpoint)


def test_bad_or_missing_config(checkpoint: Path) -> None:
    (checkpoint / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json: cannot be read as JSON"):
        load_model(checkpoint)
    (checkpoint / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json; give an NV-Embed checkpoint folder"):
        load_model(checkpoint)


def test_no_weights_at_all(checkpoint: Path) -> None:
    for shard in checkpoint.glob("*.safetensors*"):
        shard.unlink()
    with pytest.raises(CheckpointError, match=r"neither model\.safetensors\.index\.json nor model\.safetensors found"):
        load_model(checkpoint)
