"""Pooling configurations the shared goldens do not cover, against sentence-transformers itself (the dev
extra's reference): mean pooling with ``include_prompt: false`` and CLS pooling, on copies of the fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nvrag.embedder.decoder import DecoderEmbedder
from tests.conftest import REPO

FAMILY = REPO.parent / "shared" / "fixtures" / "family"
TEXTS = ["What is the capital of France?", "Gravity pulls masses together.", "x"]


def variant(tmp: Path, style: str, pooling: dict[str, bool]) -> Path:
    folder = tmp / style
    shutil.copytree(FAMILY / style, folder)
    path = folder / "1_Pooling" / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    modes = {k: False for k in data if k.startswith("pooling_mode_")}
    path.write_text(json.dumps(data | modes | pooling), encoding="utf-8")
    return folder


def reference(folder: Path, texts: list[str], prompt: str) -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32})
    return np.asarray(model.encode(texts, prompt=prompt, normalize_embeddings=True, batch_size=1))


@pytest.mark.parametrize(
    ("style", "pooling", "prompt"),
    [
        ("llama-nemotron-embed", {"pooling_mode_mean_tokens": True, "include_prompt": False}, "query: "),
        ("e5-mistral", {"pooling_mode_mean_tokens": True, "include_prompt": False}, "Instruct: Find\nQuery: "),
        ("qwen3-embedding", {"pooling_mode_mean_tokens": True, "include_prompt": False}, "Instruct: Find\nQuery:"),
        ("gte-qwen2", {"pooling_mode_cls_token": True}, ""),
    ],
)
def test_pooling_configs_match_sentence_transformers(
    tmp_path: Path, style: str, pooling: dict[str, bool], prompt: str
) -> None:
    folder = variant(tmp_path, style, pooling)
    ours = DecoderEmbedder(folder, dtype="float32").embed_with_prefix(TEXTS, prompt)
    np.testing.assert_allclose(ours, reference(folder, TEXTS, prompt), atol=1e-5)
    if not pooling.get("include_prompt", True):  # leaving the prompt out must matter, or this proves nothing
        kept = DecoderEmbedder(FAMILY / style, dtype="float32")
        folder_kept = variant(tmp_path / "kept", style, pooling | {"include_prompt": True})
        assert (
            float(np.abs(DecoderEmbedder(folder_kept, dtype="float32").embed_with_prefix(TEXTS, prompt) - ours).max())
            > 1e-3
        )
        assert kept.info.dimension == ours.shape[1]
