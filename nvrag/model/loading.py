"""Load a checkpoint folder (NV-Embed, or a Hugging Face decoder): config.json, safetensors (sharded through
the index file or single).

One explicit name map (ours → checkpoint's) covers every parameter; every key and shape is checked, and
missing or unexpected keys are named. Tensors are read straight onto the target device and cast to the target
dtype one at a time: no float32 copy of the whole model is ever made.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Final, Literal

import torch
from safetensors import safe_open
from torch import nn

from nvrag.errors import CheckpointError
from nvrag.model.config import NVEmbedConfig, read_config_json
from nvrag.model.decoder_config import DecoderConfig
from nvrag.model.embedding import DecoderEmbeddingModel
from nvrag.model.nvembed import NVEmbedModel
from nvrag.model.pooling import PoolingSpec
from nvrag.model.residency import populate, resident
from nvrag.model.skeleton import skeleton
from nvrag.model.token_scorer import HeadScorer, TokenScorer

INDEX_FILE = "model.safetensors.index.json"
STORED: Final = "stored"  # load_weights' matmul_dtype: the decoder layers' matmul weights as the checkpoint stores them
STORED_WIDE: Final = "stored-wide"  # as STORED, and NV-Embed's latent layer and the token embeddings in bfloat16
MatmulDtype = torch.dtype | Literal["stored", "stored-wide"] | None
MATMUL_WEIGHT = re.compile(r"backbone\.layers\.\d+\..+\.weight$")  # ours: a decoder layer's matmul weights
LATENT_MATMUL = re.compile(r"pool\.(to_q|to_kv|to_out|ff_in|ff_out)\.weight$")  # NV-Embed's latent layer's
# a decoder's token embeddings: a table lookup, kept narrow beside widened matmul weights (model/widened.py)
EMBED_TABLE = re.compile(r"backbone\.embed\.weight$")
SINGLE_FILE = "model.safetensors"


# our decoder module names → Hugging Face's (MistralModel, LlamaModel, Qwen2Model, Qwen3Model)
_DECODER_PARTS = {
    "attn_norm": "input_layernorm",
    "attn.q_norm": "self_attn.q_norm",
    "attn.k_norm": "self_attn.k_norm",
    "attn.q": "self_attn.q_proj",
    "attn.k": "self_attn.k_proj",
    "attn.v": "self_attn.v_proj",
    "attn.o": "self_attn.o_proj",
    "mlp_norm": "post_attention_layernorm",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.down": "mlp.down_proj",
}


def decoder_name(ours: str, prefix: str) -> str:
    """The checkpoint name of one of our ``backbone.*`` parameters, under ``prefix`` (e.g. "model.")."""
    name = ours.removeprefix("backbone.")
    if name == "embed.weight":
        return f"{prefix}embed_tokens.weight"
    if name == "norm.weight":
        return f"{prefix}norm.weight"
    _, layer, rest = name.split(".", 2)  # layers.{i}.{part}.{weight|bias}
    part, leaf = rest.rsplit(".", 1)
    return f"{prefix}layers.{layer}.{_DECODER_PARTS[part]}.{leaf}"


def decoder_name_map(model: nn.Module, prefix: str = "") -> dict[str, str]:
    """Our parameter name → the checkpoint's, for every ``backbone.*`` parameter of ``model``."""
    return {name: decoder_name(name, prefix) for name, _ in model.named_parameters() if name.startswith("backbone.")}


def name_map(config: NVEmbedConfig) -> dict[str, str]:
    """Our parameter name → the reference checkpoint's name, for every parameter of the model."""
    with skeleton():
        model = NVEmbedModel(config)
    names = decoder_name_map(model, "embedding_model.")
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
    resident_weights: bool = True,
    folded_only: bool = False,
    matmul_dtype: MatmulDtype = None,
) -> NVEmbedModel:
    """Build the model from a checkpoint folder in ``dtype`` on ``device``, every key and shape checked.
    ``resident_weights`` False: the mapped shards' pages are left to come in as they are read (a caller about
    to convert the weights a layer at a time, int8, keeps its peak memory at the converted size).
    ``folded_only``: the model will run its latent layer folded, so the projections the folded matrices are
    made from are released once they are (LatentPooling.release_projections), and never made resident.
    ``matmul_dtype``: as load_weights'."""
    config = read_config(folder)
    with skeleton():
        model = NVEmbedModel(config)
    load_weights(
        folder, model, name_map(config), shard_map(folder), dtype=dtype, device=torch.device(device),
        matmul_dtype=matmul_dtype,
    )  # fmt: skip
    model.eval().requires_grad_(False)
    pool = model.pool
    released = {id(p) for p in (pool.to_q.weight, pool.to_kv.weight, pool.to_out.weight)} if folded_only else set()
    wanted = [p for p in model.parameters() if id(p) not in released] if resident_weights else []
    with resident(wanted):  # the mapped shards' pages come in while the latent matrices compute
        model.prepare()
        if folded_only:
            pool.release_projections()
    return model


# keys a decoder checkpoint may carry that an embedding model does not use
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
IGNORED_KEYS = ("lm_head.weight", "score.weight")


def load_decoder(
    folder: Path,
    config: DecoderConfig,
    pooling: PoolingSpec,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    resident_weights: bool = True,
    matmul_dtype: MatmulDtype = None,
) -> DecoderEmbeddingModel:
    """A Hugging Face decoder checkpoint (keys bare or under ``model.``) as a DecoderEmbeddingModel
    (``resident_weights``: as load_model's; ``matmul_dtype``: as load_weights')."""
    with skeleton():
        model = DecoderEmbeddingModel(config, pooling)
    shards = shard_map(folder)
    prefix = "model." if "embed_tokens.weight" not in shards and "model.embed_tokens.weight" in shards else ""
    for key in list(shards):
        if key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES):
            del shards[key]
    load_weights(
        folder, model, decoder_name_map(model, prefix), shards, dtype=dtype, device=torch.device(device),
        matmul_dtype=matmul_dtype,
    )  # fmt: skip
    if resident_weights:
        populate(model.parameters())  # views of the mapped shards: resident now, not during the first pass
    return model.eval().requires_grad_(False)


def load_token_scorer(
    folder: Path,
    config: DecoderConfig,
    token_ids: tuple[int, ...],
    *,
    tied: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    matmul_dtype: MatmulDtype = None,
) -> TokenScorer:
    """A Hugging Face causal LM checkpoint (``*ForCausalLM``) as a TokenScorer for ``token_ids``: the backbone
    as load_decoder reads it, and only the chosen rows of ``lm_head.weight`` (or, where ``tied`` and the file
    has no lm_head, of the input embeddings, as transformers ties them)."""
    with skeleton():
        model = TokenScorer(config, token_ids)
    shards = shard_map(folder)
    prefix = _prefix(shards)
    head_key = "lm_head.weight" if "lm_head.weight" in shards else f"{prefix}embed_tokens.weight"
    if head_key != "lm_head.weight" and not tied:
        raise CheckpointError(f"{folder}: no lm_head.weight, and config.json does not tie it to the embeddings")
    _load_with_head(folder, model, shards, head_key, list(token_ids), dtype, torch.device(device), matmul_dtype)
    populate(model.parameters())
    return model


def load_head_scorer(
    folder: Path,
    config: DecoderConfig,
    pooling: PoolingSpec,
    labels: int,
    *,
    temperature: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    matmul_dtype: MatmulDtype = None,
) -> HeadScorer:
    """A decoder sequence classifier (backbone under ``model.``, head ``score.weight`` of ``labels`` rows)."""
    with skeleton():
        model = HeadScorer(config, pooling, labels, temperature)
    shards = shard_map(folder)
    if "score.weight" not in shards:
        raise CheckpointError(f"{folder}: no score.weight (the classification head)")
    rows = list(range(labels))
    _load_with_head(folder, model, shards, "score.weight", rows, dtype, torch.device(device), matmul_dtype)
    populate(model.parameters())
    return model


def _prefix(shards: dict[str, Path]) -> str:
    return "model." if "embed_tokens.weight" not in shards and "model.embed_tokens.weight" in shards else ""


def _load_with_head(
    folder: Path,
    model: HeadScorer,
    shards: dict[str, Path],
    head_key: str,
    rows: list[int],
    dtype: torch.dtype,
    device: torch.device,
    matmul_dtype: MatmulDtype = None,
) -> None:
    """The backbone's weights (every key checked), then ``rows`` of ``head_key`` as the model's head."""
    head_file = shards[head_key]
    backbone = {k: v for k, v in shards.items() if k not in IGNORED_KEYS and not k.endswith(IGNORED_SUFFIXES)}
    names = decoder_name_map(model, _prefix(shards))
    load_weights(folder, model, names, backbone, dtype=dtype, device=device, matmul_dtype=matmul_dtype)
    with safe_open(str(head_file), framework="pt", device=str(device)) as f:
        stored = f.get_slice(head_key)
        vocab, width = stored.get_shape()
        if width != model.config.hidden_size or not all(0 <= i < vocab for i in rows):
            raise CheckpointError(f"{folder}: {head_key} has shape {[vocab, width]}; it cannot give rows {rows[:8]}")
        model.head = torch.cat([stored[i : i + 1] for i in rows]).to(dtype)
    model.eval().requires_grad_(False)


def load_weights(
    folder: Path,
    model: nn.Module,
    names: dict[str, str],
    shards: dict[str, Path],
    *,
    dtype: torch.dtype,
    device: torch.device,
    matmul_dtype: MatmulDtype = None,
) -> None:
    """Assign every parameter of ``model`` (built in a skeleton) from the checkpoint key ``names`` gives it,
    cast to ``dtype`` on ``device`` one tensor at a time; missing, unexpected and misshapen keys are named.

    ``matmul_dtype``: the decoder layers' matmul weights (``backbone.layers.N.*.weight``, 2-D: nearly all of a
    decoder's bytes) load in this dtype instead (and so do NV-Embed's latent layer's and the token embeddings,
    which the decoder widens as it looks them up), or as stored (``STORED``, the decoder layers only: a mapped
    file's tensor stays a view of it, no copy; ``STORED_WIDE``: and the latent layer's and the token embeddings
    in bfloat16, widened as bfloat16 is). Converting those weights from
    there (int8) or computing with them widened (model/widened.py) never holds the whole model in a float32
    copy, which a 7-8 B model's memory would not take."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert set(names) == set(expected), "name map out of date with the model"  # a bug in nvrag, not the user's
    wanted = set(names.values())
    missing = sorted(wanted - set(shards))
    unexpected = sorted(set(shards) - wanted)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_some(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_some(unexpected)}")
        raise CheckpointError(f"{folder}: checkpoint does not match its config.json ({'; '.join(parts)})")
    narrow = torch.bfloat16 if matmul_dtype == STORED_WIDE else None
    narrow = matmul_dtype if isinstance(matmul_dtype, torch.dtype) else narrow
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
                tensor = f.get_tensor(theirs)
                if matmul_dtype is not None and len(shape) == 2 and MATMUL_WEIGHT.match(ours):
                    state[ours] = tensor if isinstance(matmul_dtype, str) else tensor.to(matmul_dtype)
                elif narrow is not None and len(shape) == 2 and (LATENT_MATMUL.match(ours) or EMBED_TABLE.match(ours)):
                    state[ours] = tensor.to(narrow)
                else:
                    state[ours] = tensor.to(dtype)
    model.load_state_dict(state, strict=True, assign=True)


def _some(keys: list[str], shown: int = 8) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
