"""bench/gpu_check.sh dry-run on the CPU at small shapes (what a GPU session runs first, at full size), and the
random checkpoints of bench/realshape.py against the real format (the nvembed-tiny fixture's names, shapes and
config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nvrag.model import load_model

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO.parent / "shared" / "fixtures" / "nvembed-tiny"
sys.path.insert(0, str(REPO / "bench"))
from realshape import SHAPES, forward_flops, hf_config, write_checkpoint  # noqa: E402


def tensors(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    found = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                t = f.get_slice(name)
                found[name] = (tuple(t.get_shape()), t.get_dtype())
    return found


def test_a_random_checkpoint_has_the_real_names_shapes_and_config(tmp_path: Path) -> None:
    written = write_checkpoint(tmp_path / "tiny", "tiny", dtype=torch.float32, shards=2)
    assert written["reused"] is False and written["shards"] == 2
    assert tensors(tmp_path / "tiny") == tensors(FIXTURE)  # every name, shape and dtype of the real format
    index = json.loads((tmp_path / "tiny" / "model.safetensors.index.json").read_text(encoding="utf-8"))
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    ours = json.loads((tmp_path / "tiny" / "config.json").read_text(encoding="utf-8"))
    theirs = json.loads((FIXTURE / "config.json").read_text(encoding="utf-8"))
    for key in ("model_type", "architectures", "padding_side", "is_mask_instruction", "add_eos", "mask_type"):
        assert ours[key] == theirs[key], key
    assert ours["latent_attention_config"] == theirs["latent_attention_config"]
    shared = set(ours["text_config"]) & set(theirs["text_config"]) - {"_name_or_path", "max_position_embeddings"}
    assert {k: ours["text_config"][k] for k in shared} == {k: theirs["text_config"][k] for k in shared}
    model = load_model(tmp_path / "tiny")  # nvrag reads it as it reads the fixture
    assert model.nvembed == SHAPES["tiny"]
    assert write_checkpoint(tmp_path / "tiny", "tiny", dtype=torch.float32, shards=2)["reused"] is True


def test_the_real_shape_is_nvembed_v2s() -> None:
    config = hf_config(SHAPES["real"], torch.bfloat16)
    assert config["latent_attention_config"] == {"model_type": "latent_attention"}  # as the real file: defaults
    t = config["text_config"]
    assert (t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"], t["num_key_value_heads"]) == (
        4096, 32, 32, 8,
    )  # fmt: skip
    assert (t["intermediate_size"], t["vocab_size"]) == (14336, 32000)
    flops = forward_flops(SHAPES["real"], [40])  # a one-line query with its instruction: ~2 x 7.1e9 per token
    assert 40 * 2 * 6.9e9 < flops["decoder"] < 40 * 2 * 7.1e9
    # 11 of 40 tokens pooled: the last layer's output projection and MLP finish those 11 only
    pooled = forward_flops(SHAPES["real"], [40], pooled=[11])
    assert flops["decoder"] - pooled["decoder"] == 29 * 2 * (4096 * 4096 + 3 * 4096 * 14336)
    assert pooled["latent"] == flops["latent"] * 11 / 40


@pytest.mark.usefixtures("clean_env")
def test_the_gpu_check_dry_runs_on_the_cpu_with_only_the_gpu_machines_packages(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "NVRAG_GPU_CHECKPOINT": str(tmp_path / "ckpt"),
           "PYTHON": sys.executable}  # fmt: skip
    args = ["--shape", "small", "--device", "cpu", "--lengths", "16,64", "--tokens", "128", "--repeat", "1"]
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), *args, "--peak-size", "256"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["errors"] == []
    assert report["imported_unavailable_modules"] == []  # nothing the GPU machine lacks
    assert report["machine"]["paths"] == ["eager", "sdpa", "varlen"]
    assert report["checkpoint"]["shards"] == 4 and report["checkpoint"]["parameters"] == sum(
        p.numel() for p in load_model(tmp_path / "ckpt").parameters()
    )
    assert report["load"]["seconds"] > 0 and report["load"]["peak_gib"] > 0
    agree = report["agreement"]
    assert agree["tiny_ok"] and agree["real_ok"]
    assert set(agree["tiny_float32"]) == {"sdpa", "varlen", "eager-folded", "sdpa-folded", "varlen-folded"}
    assert all(r["max_abs_diff"] <= 1e-4 for r in agree["tiny_float32"].values())
    for length, sequences in ((16, 8), (64, 2)):
        step = report[f"throughput_{length}"]
        assert (step["sequences"], step["tokens"]) == (sequences, 128)
        for path in ("eager", "sdpa", "varlen"):
            run = step[path]
            assert run["tokens_per_s"] == pytest.approx(128 / run["seconds"], rel=1e-3)
            share = step["gflop"] * 1e9 / run["seconds"] / report["peak"]["flops_per_s"]
            assert run["roofline_share"] == pytest.approx(share, rel=0.05, abs=2e-3)
        assert 0 < step["latent"]["flop_share"] < 1 and step["latent"]["seconds"] > 0
    assert report["peak"]["matmul_size"] == 256 and report["peak"]["flops_per_s"] > 0
