"""Load an NV-Embed checkpoint folder: config.json, sharded safetensors through the index file.

One explicit name map (ours → checkpoint's) covers every parameter; every key and shape is checked, and
missing or unexpected keys are named. Tensors are read straight onto the target device and cast to the target
dtype one at a time: no float32 copy of the whole model is ever made.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from nvrag.errors import CheckpointError
from nvrag.model.config import NVEmbedConfig, read_config_json
from nvrag.model.nvembed import NVEmbedModel
from nvrag.model.skeleton import skeleton

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def name_map(config: NVEmbedConfig) -> dict[str, str]:
    """Our parameter name → the reference checkpoint's name, for every parameter of the model."""
    names = {"backbone.embed.weight": "embedding_model.embed_tokens.weight"}
    for i in range(config.text.num_hidden_layers):
        ours, theirs = f"backbone.layers.{i}", f"embedding_model.layers.{i}"
        names |= {
            f"{ours}.attn_norm.weight": f"{theirs}.input_layernorm.weight",
            f"{ours}.attn.q.weight": f"{theirs}.self_attn.q_proj.weight",
            f"{ours}.attn.k.weight": f"{theirs}.self_attn.k_proj.weight",
            f"{ours}.attn.v.weight": f"{theirs}.self_attn.v_proj.weight",
            f"{ours}.attn.o.weight": f"{theirs}.self_attn.o_proj.weight",
            f"{ours}.mlp_norm.weight": f"{theirs}.post_attention_layernorm.weight",
            f"{ours}.mlp.gate.weight": f"{theirs}.mlp.gate_proj.weight",
            f"{ours}.mlp.up.weight": f"{theirs}.mlp.up_proj.weight",
            f"{ours}.mlp.down.weight": f"{theirs}.mlp.down_proj.weight",
        }
    names["backbone.norm.weight"] = "embedding_model.norm.weight"
    cross, ff = "latent_attention_model.cross_attend_blocks.0", "latent_attention_model.cross_attend_blocks.1"
    names |= {
        "pool.latents": "latent_attention_model.latents",
        # the reference's names are swapped: "norm" acts on the token states, "norm_context" on the latents
        "pool.token_norm.weight": f"{cross}.norm.weight",
        "pool.token_norm.bias": f"{cross}.norm.bias",
        "pool.latent_norm.weight": f"{cross}.norm_context.weight",
        "pool.latent_norm.bias": f"{cross}.norm_context.bias",
        "pool.to_q.weight": f"{cross}.fn.to_q.weight",
        "pool.to_kv.weight": f"{cross}.fn.to_kv.weight",
        "pool.to_out.weight": f"{cross}.fn.to_out.weight",
        "pool.ff_norm.weight": f"{ff}.norm.weight",
        "pool.ff_norm.bias": f"{ff}.norm.bias",
        "pool.ff_in.weight": f"{ff}.fn.net.0.weight",
        "pool.ff_in.bias": f"{ff}.fn.net.0.bias",
        "pool.ff_out.weight": f"{ff}.fn.net.2.weight",
        "pool.ff_out.bias": f"{ff}.fn.net.2.bias",
    }
    return names


def read_config(folder: Path) -> NVEmbedConfig:
    try:
        data = read_config_json(folder / "config.json")
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no config.json; give an NV-Embed checkpoint folder") from None
    return NVEmbedConfig.from_dict(data)


def shard_map(folder: Path) -> dict[str, Path]:
    """Checkpoint key → the shard file holding it."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from exc
        shards = {name: folder / file for name, file in weight_map.items()}
        missing = sorted({p.name for p in shards.values() if not p.is_file()})
        if missing:
            raise CheckpointError(f"{folder}: shard files listed in {INDEX_FILE} are missing: {', '.join(missing)}")
        return shards
    single = folder / SINGLE_FILE
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return {name: single for name in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
    raise CheckpointError(f"{folder}: neither {INDEX_FILE} nor {SINGLE_FILE} found")


def load_model(
    folder: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> NVEmbedModel:
    """Build the model from a checkpoint folder in ``dtype`` on ``device``, every key and shape checked."""
    config = read_config(folder)
    device = torch.device(device)
    with skeleton():
        model = NVEmbedModel(config)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    names = name_map(config)
    assert set(names) == set(expected), "name map out of date with the model"  # a bug in nvrag, not the user's
    shards = shard_map(folder)
    wanted = set(names.values())
    missing = sorted(wanted - set(shards))
    unexpected = sorted(set(shards) - wanted)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        raise CheckpointError(f"{folder}: checkpoint does not match its config.json ({'; '.join(parts)})")
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for ours, theirs in names.items():
        by_file.setdefault(shards[theirs], []).append(ours)
    for file, ours_names in by_file.items():
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for ours in ours_names:
                theirs = names[ours]
                shape = tuple(f.get_slice(theirs).get_shape())
                if shape != expected[ours]:
                    raise CheckpointError(
                        f"{file.name}: {theirs} has shape {list(shape)}, config.json implies {list(expected[ours])}"
                    )
                state[ours] = f.get_tensor(theirs).to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False).prepare()
