"""The decoder embedders against their references' own outputs (the shared family fixtures' golden.json).

Every case of every style within 1e-5 in float32 on every attention path here, the token ids equal to the
reference tokenizer's; then each mistake the fixtures' READMEs list is made on purpose and shown to move the
vectors past that tolerance, so none of them can come back unnoticed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from nvrag.embedder.base import normalise
from nvrag.embedder.decoder import DecoderEmbedder
from nvrag.embedder.runtime import right_padded
from nvrag.errors import CheckpointError, ConfigError
from nvrag.model import available_backends
from nvrag.model.decoder_config import RopeConfig
from nvrag.model.pooling import PoolingKind
from nvrag.model.prepack import prepack_supported
from tests.conftest import REPO

FAMILY = REPO.parent / "shared" / "fixtures" / "family"
STYLES = ("qwen3-embedding", "gte-qwen2", "e5-mistral", "llama-nemotron-embed")
BACKENDS = available_backends(torch.device("cpu"), torch.float32)
ATOL = 1e-5


@cache
def golden(style: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FAMILY / style / "golden.json").read_text(encoding="utf-8"))
    return data


def load(style: str, attention: str = "sdpa", **kwargs: Any) -> DecoderEmbedder:
    return DecoderEmbedder(
        FAMILY / style, dtype="float32", attention=attention, max_length=golden(style)["max_length"], **kwargs
    )


def worst(e: DecoderEmbedder, style: str, key: str = "embedding") -> float:
    """The largest difference to the goldens over every case, each case encoded together as the reference did."""
    diff = 0.0
    for case in golden(style)["cases"]:
        got = e.embed_with_prefix([i["text"] for i in case["items"]], case["prompt"])
        diff = max(diff, float(np.abs(got - np.array([i[key] for i in case["items"]])).max()))
    return diff


@pytest.mark.parametrize("attention", BACKENDS)
@pytest.mark.parametrize("style", STYLES)
def test_every_golden_case_on_every_path(style: str, attention: str) -> None:
    assert worst(load(style, attention, batch_tokens=256), style) < ATOL


@pytest.mark.parametrize("style", STYLES)
def test_token_ids_equal_the_reference_tokenizers(style: str) -> None:
    e = load(style)
    for case in golden(style)["cases"]:
        ids = e.tokenize([i["text"] for i in case["items"]], case["prompt"])
        assert ids == [i["token_ids"] for i in case["items"]], case["name"]


@pytest.mark.parametrize("style", STYLES)
def test_default_prompts_come_from_the_folder(style: str) -> None:
    """Queries get the checkpoint's query prompt and documents its document prompt, as the goldens did."""
    e = load(style)
    for case in golden(style)["cases"]:
        texts = [i["text"] for i in case["items"]]
        got = e.embed_queries(texts) if case["kind"] == "query" else e.embed_documents(texts)
        np.testing.assert_allclose(got, [i["embedding"] for i in case["items"]], atol=ATOL, err_msg=case["name"])


def test_instructions_format_through_the_family_template() -> None:
    qwen, gte = load("qwen3-embedding"), load("gte-qwen2")
    assert qwen.query_prefix("Find it") == "Instruct: Find it\nQuery:"  # Qwen3: no trailing space
    assert gte.query_prefix("Find it") == "Instruct: Find it\nQuery: "
    assert load("llama-nemotron-embed").query_prefix("ignored") == "query: "  # takes no instructions
    assert qwen.info.document_template == "" and load("llama-nemotron-embed").info.document_template == "passage: "


def test_matryoshka_cuts_then_normalises() -> None:
    assert worst(load("qwen3-embedding", dimensions=8), "qwen3-embedding", "embedding_mrl8") < ATOL
    with pytest.raises(ConfigError, match="not Matryoshka-trained"):
        load("gte-qwen2", dimensions=8)


@pytest.mark.parametrize("style", STYLES)
def test_bfloat16_stays_close_to_float32(style: str) -> None:
    exact, half = load(style), DecoderEmbedder(FAMILY / style, dtype="bfloat16")
    texts = [i["text"] for case in golden(style)["cases"] for i in case["items"] if not i["truncated"]]
    a, b = exact.embed_documents(texts), half.embed_documents(texts)
    assert float((a * b).sum(axis=1).min()) > 0.999


@pytest.mark.skipif(not prepack_supported(), reason="this PyTorch or CPU cannot prepack bfloat16 weights")
def test_a_server_with_prepacked_weights_keeps_each_batch_at_its_own_width() -> None:
    half = DecoderEmbedder(FAMILY / "qwen3-embedding", dtype="bfloat16")
    widths: list[int] = []
    half.model.register_forward_pre_hook(lambda module, args: widths.append(int(args[0].shape[1])))
    texts = ["what is a short query", "and another one"]
    plain = half.embed_documents(texts)
    before = widths[:]
    widths.clear()
    assert half.prepare_for_serving() is not None
    packed = half.embed_documents(texts)
    assert all(w % 16 == 0 for w in before) and not any(w % 16 == 0 for w in widths)  # padded, then not
    assert float((plain * packed).sum(axis=1).min()) > 0.9995


# -- each mistake class of the READMEs, made on purpose, fails ---------------------------------------------


def mistaken(style: str, change: Any) -> float:
    e = load(style)
    change(e)
    return worst(e, style)


def test_dropping_the_appended_eos_is_caught() -> None:
    def drop(e: DecoderEmbedder) -> None:
        original = e.tokenize
        e.tokenize = lambda texts, prefix: [ids[:-1] or ids for ids in original(texts, prefix)]  # type: ignore[method-assign]

    for style in ("qwen3-embedding", "gte-qwen2", "e5-mistral"):
        assert mistaken(style, drop) > 1e-3, style


def test_appending_qwen3s_configured_eos_instead_is_caught() -> None:
    im_end = load("qwen3-embedding")._tokenizer.token_to_id("<|im_end|>")

    def swap(e: DecoderEmbedder) -> None:
        original = e.tokenize
        e.tokenize = lambda texts, prefix: [[*ids[:-1], im_end] for ids in original(texts, prefix)]  # type: ignore[method-assign]

    assert mistaken("qwen3-embedding", swap) > 1e-3


def test_the_wrong_attention_direction_is_caught() -> None:
    def flip(e: DecoderEmbedder) -> None:
        for layer in e.model.backbone.layers:
            layer.attn.causal = not layer.attn.causal

    for style in STYLES:
        assert mistaken(style, flip) > 1e-3, style


def test_hidden_states_before_the_final_norm_are_caught() -> None:
    def skip(e: DecoderEmbedder) -> None:
        e.model.backbone.norm = nn.Identity()  # type: ignore[assignment]

    for style in STYLES:
        assert mistaken(style, skip) > 1e-3, style


def test_the_token_before_the_last_is_caught() -> None:
    """Last-token pooling must read each row's own last real token (the appended EOS), not the one before it."""
    from nvrag.model import embedding

    def before_last(kind: PoolingKind, weights: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros(weights.shape[0], dtype=torch.bool)
        keep[cu_seqlens[1:] - 2] = True
        return keep

    monkey = pytest.MonkeyPatch()
    monkey.setattr(embedding, "read_tokens", before_last)
    try:
        e = load("qwen3-embedding", attention="sdpa")
        case = next(c for c in golden("qwen3-embedding")["cases"] if c["name"] == "document_batch_mixed_lengths")
        texts = [i["text"] for i in case["items"]]
        got = normalise(e.forward(e.tokenize(texts, ""), ""))  # one padded batch (the base would sort by length)
        assert float(np.abs(got - np.array([i["embedding"] for i in case["items"]])).max()) > 1e-3
    finally:
        monkey.undo()


def test_one_padded_batch_equals_the_goldens() -> None:
    e = load("qwen3-embedding")
    for case in golden("qwen3-embedding")["cases"]:
        texts = [i["text"] for i in case["items"]]
        got = normalise(e.forward(e.tokenize(texts, case["prompt"]), case["prompt"]))
        np.testing.assert_allclose(got, [i["embedding"] for i in case["items"]], atol=ATOL, err_msg=case["name"])


def test_matryoshka_cut_after_normalising_is_caught() -> None:
    full = load("qwen3-embedding")
    case = golden("qwen3-embedding")["cases"][0]
    wrong = full.embed_with_prefix([case["items"][0]["text"]], case["prompt"])[:, :8]  # normalised, then cut
    assert float(np.abs(wrong[0] - np.array(case["items"][0]["embedding_mrl8"])).max()) > 1e-3


def test_skipped_qk_norm_and_biases_are_caught() -> None:
    def no_qk_norm(e: DecoderEmbedder) -> None:
        for layer in e.model.backbone.layers:
            layer.attn.q_norm = layer.attn.k_norm = None

    def no_bias(e: DecoderEmbedder) -> None:
        for layer in e.model.backbone.layers:
            for proj in (layer.attn.q, layer.attn.k, layer.attn.v):
                proj.bias = None

    assert mistaken("qwen3-embedding", no_qk_norm) > 1e-3
    assert mistaken("gte-qwen2", no_bias) > 1e-3


def test_llama3_rope_scaling_dropped_is_caught() -> None:
    def unscaled(e: DecoderEmbedder) -> None:
        config = e.model.backbone.config
        e.model.backbone.config = dataclasses.replace(config, rope=RopeConfig(theta=config.rope.theta))

    assert mistaken("llama-nemotron-embed", unscaled) > ATOL


def test_an_eos_left_to_tokenizer_config_is_still_appended(tmp_path: Path) -> None:
    """The real e5-mistral repo: tokenizer.json adds only <s>, tokenizer_config says add_eos_token; transformers
    5 drops the </s> the model pools, nvrag keeps it."""
    folder = tmp_path / "e5"
    shutil.copytree(FAMILY / "e5-mistral", folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    post = tokenizer["post_processor"]
    post["single"] = [p for p in post["single"] if p.get("SpecialToken", {}).get("id") != "</s>"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    e = DecoderEmbedder(folder, dtype="float32", max_length=golden("e5-mistral")["max_length"])
    assert e.tokenize(["hello"], "")[0][-1] == 2
    assert worst(e, "e5-mistral") < ATOL


def test_unsupported_folders_are_refused_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(FAMILY / "qwen3-embedding", folder)
    pooling = folder / "1_Pooling" / "config.json"
    data = json.loads(pooling.read_text(encoding="utf-8"))
    (pooling).write_text(json.dumps(data | {"pooling_mode_lasttoken": False, "pooling_mode_max_tokens": True}))
    with pytest.raises(CheckpointError, match="pooling_mode_max_tokens is not supported"):
        DecoderEmbedder(folder)
    (pooling).write_text(json.dumps(data))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps(config | {"auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(CheckpointError, match=r'remote code .* add "is_causal"'):
        DecoderEmbedder(folder)  # remote code could attend either way: nvrag does not guess
    (folder / "config.json").write_text(json.dumps(config | {"auto_map": {"AutoModel": "x.Y"}, "is_causal": True}))
    DecoderEmbedder(folder)
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "gemma3"}))
    with pytest.raises(CheckpointError, match="model_type 'gemma3' is not a supported decoder"):
        DecoderEmbedder(folder)


@pytest.mark.parametrize("backend", BACKENDS)
def test_last_token_pooling_finishes_one_token_a_text(backend: str) -> None:
    """Last-token pooling reads one state a text, so the last layer's output projection and MLP run on one row
    a text (every token is still a key and a value there): the goldens still hold, and a pass that finished
    every token gives the same vectors."""
    e = load("qwen3-embedding", attention=backend)
    case = next(c for c in golden("qwen3-embedding")["cases"] if c["name"] == "document_batch_mixed_lengths")
    texts = [i["text"] for i in case["items"]]
    batch = e.tokenize(texts, "")
    rows: list[int] = []
    hook = e.model.backbone.layers[-1].mlp.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[-2]))
    try:
        got = normalise(e.forward(batch, ""))
    finally:
        hook.remove()
    assert rows == [len(texts)]
    np.testing.assert_allclose(got, [i["embedding"] for i in case["items"]], atol=ATOL)
    ids, mask, _ = right_padded(batch, 0, 0, max(len(ids) for ids in batch))
    with torch.inference_mode():
        states = e.model.backbone(ids, e.model.backbone.padded_batch(mask, "eager", e.model.dtype))
        every = states[torch.arange(len(texts)), mask.sum(dim=1) - 1]  # every token finished, then the last read
    np.testing.assert_allclose(got, normalise(every.float().numpy()), atol=ATOL)
