"""The decoder embedder families nvrag knows, and the hub models of each: what a folder's files cannot say.

A style is recognised from the files (architecture and pooling); it adds the license, whether the family is
Matryoshka-trained (so ``--dimensions`` is allowed), and, for hub configs that leave attention to remote code
(``auto_map``), whether attention is bidirectional. A known hub id adds its description and the name indexes
record. Torch-free: the CLI lists these without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvrag.embedder.checkpoint import read_folder
from nvrag.embedder.names import LOCAL_PREFIX
from nvrag.errors import CheckpointError


@dataclass(frozen=True)
class Style:
    name: str
    model_type: str
    pooling: str
    license: str
    reference: str  # the reference the fixtures' goldens came from (docs/models.md)
    matryoshka: bool = False  # Matryoshka-trained: --dimensions may cut its vectors
    bidirectional_if_remote: bool | None = None  # attention when config.json defers to remote code


STYLES: tuple[Style, ...] = (
    Style(
        "qwen3-embedding",
        "qwen3",
        "last",
        "Apache-2.0",
        "sentence-transformers (left padding) and the model card's last_token_pool",
        matryoshka=True,
    ),
    Style(
        "gte-qwen2",
        "qwen2",
        "last",
        "Apache-2.0",
        "sentence-transformers and the model card's last_token_pool, bidirectional",
        bidirectional_if_remote=True,
    ),
    Style("e5-mistral", "mistral", "last", "MIT", "sentence-transformers and the model card's last_token_pool"),
    Style(
        "llama-nemotron-embed",
        "llama",
        "mean",
        "NVIDIA Open Model License (see the model card)",
        "sentence-transformers and the model card's average_pool, bidirectional, llama3 RoPE",
        matryoshka=True,
        bidirectional_if_remote=True,
    ),
)
GENERIC_LICENSE = "unknown: see the checkpoint's model card"


def style_of(model_type: str, pooling: str) -> Style | None:
    return next((s for s in STYLES if s.model_type == model_type and s.pooling == pooling), None)


@dataclass(frozen=True)
class KnownModel:
    """A hub model: its id (the name indexes record), style and how people call it."""

    hub_id: str
    style: str
    dimension: int
    description: str
    aliases: tuple[str, ...] = ()
    license: str | None = None  # where it differs from the style's
    query_prompt_name: str | None = None  # where the model card's query prompt is not the files' default

    @property
    def style_info(self) -> Style:
        return next(s for s in STYLES if s.name == self.style)


KNOWN: tuple[KnownModel, ...] = (
    KnownModel("Qwen/Qwen3-Embedding-0.6B", "qwen3-embedding", 1024, "Qwen3-Embedding 0.6B", ("qwen3-embedding-0.6b",)),
    KnownModel("Qwen/Qwen3-Embedding-4B", "qwen3-embedding", 2560, "Qwen3-Embedding 4B", ("qwen3-embedding-4b",)),
    KnownModel("Qwen/Qwen3-Embedding-8B", "qwen3-embedding", 4096, "Qwen3-Embedding 8B", ("qwen3-embedding-8b",)),
    KnownModel(
        "Alibaba-NLP/gte-Qwen2-1.5B-instruct", "gte-qwen2", 1536, "gte-Qwen2 1.5B instruct", ("gte-qwen2-1.5b",)
    ),
    KnownModel("Alibaba-NLP/gte-Qwen2-7B-instruct", "gte-qwen2", 3584, "gte-Qwen2 7B instruct", ("gte-qwen2-7b",)),
    KnownModel(
        "intfloat/e5-mistral-7b-instruct",
        "e5-mistral",
        4096,
        "E5-mistral 7B instruct",
        ("e5-mistral",),
        query_prompt_name="web_search_query",
    ),
    KnownModel(
        "nvidia/llama-nemotron-embed-1b-v2",
        "llama-nemotron-embed",
        2048,
        "NVIDIA Llama Nemotron Embed 1B v2 (bidirectional Llama 3.2)",
        ("llama-nemotron-embed-1b-v2",),
    ),
    KnownModel(
        "nvidia/llama-embed-nemotron-8b",
        "llama-nemotron-embed",
        4096,
        "NVIDIA Llama Embed Nemotron 8B (bidirectional Llama 3.1); non-commercial license",
        ("llama-embed-nemotron-8b",),
        license="NVIDIA non-commercial license (see the model card)",
    ),
)


def known_model(name: str) -> KnownModel | None:
    wanted = name.strip().lower()
    for model in KNOWN:
        if wanted == model.hub_id.lower() or wanted in model.aliases:
            return model
    return None


def hub_id_of_folder(parts: tuple[str, ...]) -> str | None:
    """The hub id of a Hugging Face cache snapshot (``.../models--ORG--NAME/snapshots/REV``), else None."""
    for part in reversed(parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/", 1)
    return None


def folder_model_name(folder: Path) -> str:
    """The name an index records for a decoder folder: its hub id (a hub cache snapshot of a known model), else
    ``local:STYLE/FOLDER``."""
    hub_id = hub_id_of_folder(folder.resolve().parts)
    known = known_model(hub_id) if hub_id else None
    if known is not None:
        return known.hub_id
    facts = read_folder(folder)
    style = style_of(facts.model_type, facts.pooling)
    return f"{LOCAL_PREFIX}{style.name if style else 'decoder'}/{folder.resolve().name}"


def decide_causal(config: dict[str, object], remote_code: bool, style: Style | None, where: str) -> bool:
    """Causal or bidirectional: config.json's ``is_causal`` where it says; where the config leaves attention to
    remote code, the style's knowledge; otherwise causal (transformers' default for these architectures)."""
    value = config.get("is_causal")
    if isinstance(value, bool):
        return value
    if remote_code:
        if style is None or style.bidirectional_if_remote is None:
            raise CheckpointError(
                f"{where}: config.json leaves attention to remote code (auto_map), so nvrag cannot tell causal "
                'from bidirectional; add "is_causal": true or false to config.json'
            )
        return not style.bidirectional_if_remote
    return True
