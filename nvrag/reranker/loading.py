"""Which reranker a checkpoint folder holds, read from its own files, and loading it.

- ``BertForSequenceClassification``, ``XLMRobertaForSequenceClassification`` or
  ``RobertaForSequenceClassification``: a cross-encoder (cross_encoder.py);
- ``*ForCausalLM`` of a supported decoder (Qwen3, Qwen2, Llama, Mistral): an LLM reranker in Qwen3-Reranker's
  form (llm.py);
- ``LlamaBidirectionalForSequenceClassification`` (model_type llama_bidirec): a bidirectional-Llama classifier in
  the form of NVIDIA's Llama Nemotron rerankers (nemotron.py).

Anything else is refused by name. A folder is given by path, or a known hub id is found in the Hugging Face
cache (never downloaded at search time: ``huggingface-cli download ID`` first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nvrag.embedder.dtypes import DtypeChoice, choose_dtype
from nvrag.embedder.families import hub_id_of_folder
from nvrag.embedder.names import LOCAL_PREFIX
from nvrag.embedder.weights import checkpoint_fp32_bytes, weights_fingerprint
from nvrag.errors import CheckpointError, ConfigError, ModelUnavailableError
from nvrag.model.config import read_config_json
from nvrag.model.decoder_config import FAMILIES
from nvrag.reranker.base import Checkpoint, Reranker, RerankerKind

GENERIC_LICENSE = "unknown: see the checkpoint's model card"
BIDIRECTIONAL_LLAMA = ("llama_bidirec", "bidirectional_llama")  # NVIDIA's remote-code bidirectional Llama
FolderKind = Literal["cross-encoder", "llm", "bidirectional-classifier"]


@dataclass(frozen=True)
class KnownReranker:
    hub_id: str
    kind: RerankerKind
    description: str
    license: str
    aliases: tuple[str, ...] = ()


KNOWN_RERANKERS: tuple[KnownReranker, ...] = (
    KnownReranker("Qwen/Qwen3-Reranker-0.6B", "llm", "Qwen3-Reranker 0.6B", "Apache-2.0", ("qwen3-reranker-0.6b",)),
    KnownReranker("Qwen/Qwen3-Reranker-4B", "llm", "Qwen3-Reranker 4B", "Apache-2.0", ("qwen3-reranker-4b",)),
    KnownReranker("Qwen/Qwen3-Reranker-8B", "llm", "Qwen3-Reranker 8B", "Apache-2.0", ("qwen3-reranker-8b",)),
    KnownReranker(
        "BAAI/bge-reranker-v2-m3",
        "cross-encoder",
        "BGE reranker v2 m3 (XLM-RoBERTa)",
        "Apache-2.0",
        ("bge-reranker-v2-m3",),
    ),
    KnownReranker(
        "nvidia/llama-nemotron-rerank-1b-v2",
        "cross-encoder",
        "NVIDIA Llama Nemotron Rerank 1B v2 (bidirectional Llama 3.2)",
        "NVIDIA Open Model License (see the model card)",
        ("llama-nemotron-rerank-1b-v2",),
    ),
    KnownReranker(
        "cross-encoder/ms-marco-MiniLM-L6-v2",
        "cross-encoder",
        "MS MARCO MiniLM-L6 cross-encoder",
        "Apache-2.0",
        ("ms-marco-minilm-l6-v2", "cross-encoder/ms-marco-MiniLM-L-6-v2"),
    ),
    KnownReranker(
        "cross-encoder/ms-marco-MiniLM-L12-v2",
        "cross-encoder",
        "MS MARCO MiniLM-L12 cross-encoder",
        "Apache-2.0",
        ("ms-marco-minilm-l12-v2", "cross-encoder/ms-marco-MiniLM-L-12-v2"),
    ),
)
STYLE_NAMES: dict[FolderKind, str] = {
    "cross-encoder": "cross-encoder",
    "llm": "qwen3-reranker",
    "bidirectional-classifier": "llama-nemotron-rerank",
}


def known_reranker(name: str) -> KnownReranker | None:
    wanted = name.strip().lower()
    for model in KNOWN_RERANKERS:
        if wanted == model.hub_id.lower() or wanted in (a.lower() for a in model.aliases):
            return model
    return None


def kind_of(folder: Path) -> tuple[FolderKind, dict[str, Any]]:
    """The reranker kind of a checkpoint folder and its parsed config.json; CheckpointError if it is none."""
    try:
        config = read_config_json(folder / "config.json")
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no config.json; give a reranker checkpoint folder") from None
    architectures = config.get("architectures")
    architecture = str(architectures[0]) if isinstance(architectures, list) and architectures else "?"
    model_type = config.get("model_type")
    if model_type in ("bert", "roberta", "xlm-roberta") and architecture.endswith("ForSequenceClassification"):
        return "cross-encoder", config
    if model_type in BIDIRECTIONAL_LLAMA and architecture.endswith("ForSequenceClassification"):
        return "bidirectional-classifier", config
    if model_type in FAMILIES and architecture.endswith("ForCausalLM"):
        return "llm", config
    raise CheckpointError(
        f"{folder}: {architecture} (model_type {model_type!r}) is not a reranker nvrag runs; it runs BERT and "
        "(XLM-)RoBERTa sequence classifiers (cross-encoders), NVIDIA's bidirectional-Llama classifiers and "
        "Qwen3/Qwen2/Llama/Mistral causal LMs in Qwen3-Reranker's form "
        "(docs/reranking.md)"
    )


def resolve_folder(name_or_path: str | Path) -> tuple[Path, KnownReranker | None]:
    """A folder given by path, or a known hub id's folder in the Hugging Face cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        hub_id = hub_id_of_folder(path.resolve().parts)
        return path, known_reranker(hub_id) if hub_id else None
    known = known_reranker(str(name_or_path))
    if known is None:
        names = ", ".join(m.hub_id for m in KNOWN_RERANKERS)
        raise ModelUnavailableError(
            f"reranker {str(name_or_path)[:200]!r} is neither a checkpoint folder nor a known reranker ({names})"
        )
    from nvrag.embedder.registry import hub_folder  # huggingface_hub, only for hub ids

    return hub_folder(known.hub_id, None), known


def load_reranker(
    name_or_path: str | Path,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    max_length: int | None = None,
    batch_tokens: int | None = None,
    attention: str = "auto",
) -> Reranker:
    """The reranker a folder (or a known hub id in the cache) holds, in ``dtype`` (default: as the embedders
    choose it, dtypes.choose_dtype) on ``device``; the weights load on first use."""
    folder, known = resolve_folder(name_or_path)
    kind, config = kind_of(folder)
    choice = choose_dtype(dtype, device, fp32_bytes=checkpoint_fp32_bytes(folder))
    if choice.name == "int8":
        raise ConfigError("rerankers compute in float32, bfloat16 or float16; --dtype int8 is for the embedders")
    source = Checkpoint(
        folder=folder,
        config=config,
        name=known.hub_id if known else f"{LOCAL_PREFIX}{STYLE_NAMES[kind]}/{folder.resolve().name}",
        revision=weights_fingerprint(folder),
        license=known.license if known else GENERIC_LICENSE,
        device=device,
        dtype=choice.name,
        max_length=max_length,
        batch_tokens=batch_tokens or 8192,
        attention=attention,
    )
    reranker: Reranker
    if kind == "cross-encoder":  # the rerankers' modules import torch: only the one asked for is imported
        from nvrag.reranker.cross_encoder import CrossEncoderReranker

        reranker = CrossEncoderReranker(source)
    elif kind == "bidirectional-classifier":
        from nvrag.reranker.nemotron import BidirectionalClassifierReranker

        reranker = BidirectionalClassifierReranker(source)
    else:
        from nvrag.reranker.llm import LLMReranker

        reranker = LLMReranker(source)
    _note(reranker, choice)
    return reranker


def _note(reranker: Reranker, choice: DtypeChoice) -> None:
    reranker.notes = (choice.note,) if choice.note else ()
    reranker.dtype_reason = choice.reason
