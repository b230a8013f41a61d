"""Our BERT encoders (PyTorch and NumPy) against transformers' BertModel on a random checkpoint of another shape
(padding included), the checks a checkpoint folder must pass (the same for both), and the NumPy engine's GELU."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from nvrag.errors import CheckpointError
from nvrag.model.bert import load_bert
from nvrag.model.bert_numpy import gelu, load_numpy_bert

LOADERS: list[Callable[[Path], Any]] = [load_bert, load_numpy_bert]

CONFIG = {
    "model_type": "bert",
    "vocab_size": 120,
    "hidden_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    transformers = pytest.importorskip("transformers")  # installed with sentence-transformers (the reference)
    torch.manual_seed(3)
    reference = transformers.BertModel(transformers.BertConfig(**CONFIG), add_pooling_layer=True).eval()
    folder = tmp_path_factory.mktemp("bert")
    (folder / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    return folder, reference


@pytest.mark.parametrize("load", LOADERS, ids=["torch", "numpy"])
def test_it_equals_transformers_bert_model_with_padding(
    load: Callable[[Path], Any], checkpoint: tuple[Path, object]
) -> None:
    folder, reference = checkpoint
    ours = load(folder)
    ids = torch.randint(1, 120, (3, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 3:] = 0
    ids = ids * mask
    with torch.inference_mode():
        want = reference(input_ids=ids, attention_mask=mask).last_hidden_state  # type: ignore[operator]
        got = ours(ids, mask) if load is load_bert else torch.from_numpy(ours(ids.numpy(), mask.numpy()))
    assert got.dtype == torch.float32
    for row, n in enumerate(mask.sum(1).tolist()):
        torch.testing.assert_close(got[row, :n], want[row, :n], atol=1e-5, rtol=1e-5)


def test_bfloat16_matmuls_keep_embeddings_norms_and_the_residual_in_float32(checkpoint: tuple[Path, object]) -> None:
    folder, reference = checkpoint
    ours = load_bert(folder, matmul_dtype=torch.bfloat16)
    layer = ours.layers[0]
    assert {layer.query.weight.dtype, layer.up.weight.dtype, layer.down.bias.dtype} == {torch.bfloat16}
    assert {ours.word.weight.dtype, ours.embed_norm.weight.dtype, layer.attn_norm.weight.dtype} == {torch.float32}
    ids = torch.randint(1, 120, (2, 11), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        want = reference(input_ids=ids, attention_mask=mask).last_hidden_state  # type: ignore[operator]
        got = ours(ids, mask)
    assert got.dtype == torch.float32  # the last LayerNorm's output, float32
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert cosine.min() > 0.999
    assert (got - want).abs().max() > 1e-4  # the matmuls really ran in bfloat16


def test_the_numpy_gelu_is_the_erf_gelu_to_float32_precision() -> None:
    x = np.linspace(-12.0, 12.0, 240_001, dtype=np.float32)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2.0)) for v in x.astype(np.float64)])
    got = gelu(x)
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() < 5e-7  # measured 3.8e-7; torch's float32 GELU is within 1.1e-6
    assert np.abs(got - 0.5 * x * (1 + np.tanh(0.79788456 * (x + 0.044715 * x**3)))).max() > 1e-4  # not tanh


@pytest.mark.parametrize("load", LOADERS, ids=["torch", "numpy"])
def test_a_checkpoint_that_is_not_what_it_claims_is_refused(
    load: Callable[[Path], Any], checkpoint: tuple[Path, object], tmp_path: Path
) -> None:
    folder, _ = checkpoint
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    save_file({k: v for k, v in state.items() if "layer.2.output.dense" not in k}, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \['encoder.layer.2.output.dense.bias'"):
        load(broken)
    (broken / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": 50}), encoding="utf-8")
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"hidden_size is not a multiple of num_attention_heads"):
        load(broken)
    (broken / "config.json").write_text(json.dumps({**CONFIG, "hidden_act": "relu"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"only BERT with GELU and absolute positions"):
        load(broken)
    (broken / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": 64}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"has shape \(120, 48\), expected \(120, 64\)"):
        load(broken)
