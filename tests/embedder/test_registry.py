from __future__ import annotations

from pathlib import Path

import pytest

from nvrag.embedder import REGISTRY, LoadOptions, choose_model, get_spec, load_embedder
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.errors import ModelUnavailableError, UnknownModelError
from tests.conftest import NVEMBED_TINY


def test_registry_entries_carry_what_an_index_needs() -> None:
    minilm = get_spec("all-MiniLM-L6-v2")
    assert (minilm.dimension, minilm.max_tokens, minilm.license) == (384, 256, "Apache-2.0")
    nvembed = get_spec("nvidia/NV-Embed-v2")
    assert (nvembed.dimension, nvembed.max_tokens, nvembed.license) == (4096, 32768, "CC-BY-NC-4.0")
    assert nvembed.query_template == "Instruct: {instruction}\nQuery: "
    assert nvembed.document_template == ""


def test_aliases_resolve_case_insensitively() -> None:
    assert get_spec("MiniLM").name == "all-MiniLM-L6-v2"
    assert get_spec("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    assert get_spec("nv-embed-v2").name == "nvidia/NV-Embed-v2"


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'gpt-embed'; known models: auto, all-MiniLM-L6-v2"):
        get_spec("gpt-embed")


def test_nvembed_without_local_weights_says_how_to_get_them() -> None:
    with pytest.raises(ModelUnavailableError, match=r"nvidia/NV-Embed-v2 weights are not available locally"):
        load_embedder("nvidia/NV-Embed-v2")


def test_nvembed_loads_from_a_checkpoint_folder() -> None:
    embedder = load_embedder("nvidia/NV-Embed-v2", LoadOptions(model_path=NVEMBED_TINY, max_length=128))
    assert (embedder.name, embedder.dimension, embedder.info.max_tokens) == ("nvidia/NV-Embed-v2", 64, 128)


def test_loaded_models_match_their_registry_entries(minilm: MiniLMEmbedder) -> None:
    for embedder in (minilm, load_embedder("nvrag/fake-wordlen")):
        spec = REGISTRY[embedder.name]
        info = embedder.info
        assert (info.dimension, info.max_tokens, info.query_template, info.document_template, info.license) == (
            spec.dimension,
            spec.max_tokens,
            spec.query_template,
            spec.document_template,
            spec.license,
        )


@pytest.mark.parametrize(
    ("cuda", "weights", "expected", "reason"),
    [
        (False, None, "all-MiniLM-L6-v2", "no CUDA GPU here"),
        (False, Path("/w"), "all-MiniLM-L6-v2", "no CUDA GPU here"),
        (True, None, "all-MiniLM-L6-v2", "no nvidia/NV-Embed-v2 weights found locally"),
        (True, Path("/w"), "nvidia/NV-Embed-v2", "auto: CUDA GPU and nvidia/NV-Embed-v2 weights at /w"),
    ],
)
def test_auto_chooses_and_says_why(cuda: bool, weights: Path | None, expected: str, reason: str) -> None:
    name, why = choose_model("auto", cuda_available=cuda, nvembed_weights=weights)
    assert name == expected
    assert reason in why


def test_an_explicit_model_is_taken_as_requested() -> None:
    assert choose_model("minilm", cuda_available=True, nvembed_weights=None) == (
        "all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2 as requested",
    )


def test_max_length_truncates_and_is_bounded(minilm: MiniLMEmbedder) -> None:
    short = load_embedder("minilm", LoadOptions(max_length=8))
    assert short.info.max_tokens == 8
    assert short.tokenize(["one two three four five six seven eight nine ten"], "")[0][-1] == 102  # [SEP] kept
    assert len(short.tokenize(["one two three four five six seven eight nine ten"], "")[0]) == 8
    with pytest.raises(Exception, match="between 3 and 256"):
        load_embedder("minilm", LoadOptions(max_length=1000))
