"""What one indexing run is asked to do: an ``IndexRequest``, valid by construction.

Every caller (the CLI, UI uploads, the HTTP documents route, Python) builds a request and hands it to an
engine (``nvrag.indexer.engine.Engine``). ``check_request`` is the one function that holds every rule between
options; it runs when the request is made, so an engine never sees a request that cannot work. Rules that need
the index's manifest or the loaded model (pinning, chunker, storage) are checked once, when the run opens the
index (``engine.open_run``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from nvrag.errors import ConfigError, InputError
from nvrag.indexer.formats import TableColumns
from nvrag.indexer.loaders import ORIGIN_API, ORIGIN_PATH, ORIGIN_UPLOAD, LoadFailure
from nvrag.schema import ChunkerSettings, Document
from nvrag.store import check_index_name

VECTOR_DTYPES = ("float32", "float16")
QUANTIZATIONS = ("none", "binary")
ENGINES = ("local", "ray")
DEFAULT_BATCH_CHUNKS = 256  # chunks per embedding batch and commit, per device


@dataclass(frozen=True)
class PathSource:
    """A file or a directory (read recursively); ``columns`` name the fields of tables and JSON; directories
    under it in ``exclude`` are not read (an engine adds its store's own directory: ``Engine.run``)."""

    path: Path
    columns: TableColumns = field(default_factory=TableColumns)
    exclude: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ItemsSource:
    """Documents (and load failures) already read by the caller. ``uploads``: files uploaded in the web UI
    (their ids carry UPLOAD_PREFIX; nothing else may); ``api``: documents sent to the HTTP API (their source
    is "api:ID"). Either decides the run's origin (``IndexRequest.origin``)."""

    items: Iterable[Document | LoadFailure]
    uploads: bool = False
    api: bool = False


Source = PathSource | ItemsSource


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs. ``address`` None starts a local Ray instance (of ``local_cpus``
    CPUs, default all); "auto" joins the cluster this machine belongs to; "ray://host:10001" a remote one."""

    address: str | None = None
    workers: int | None = None  # embedding actors; None: one per GPU share on a GPU cluster, else one
    gpus_per_worker: float | None = None  # each actor's GPU share; None: 1 on a GPU cluster, else 0 (CPU)
    cpus_per_worker: float = 1.0
    local_cpus: int | None = None
    jsonl_block_lines: int = 2000  # a JSONL file is loaded and chunked in blocks of this many lines

    def resolved(self, cluster_cpus: float, cluster_gpus: float) -> RayOptions:
        """The defaults filled in for a cluster of these resources; impossible requests refused."""
        gpus = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
        if gpus > cluster_gpus:
            raise ConfigError(
                f"--gpus-per-worker {gpus:g}: the Ray cluster has {cluster_gpus:g} GPUs; "
                "use --gpus-per-worker 0 for CPU workers"
            )
        workers = self.workers if self.workers is not None else (int(cluster_gpus // gpus) if gpus > 0 else 1)
        if workers < 1:
            raise ConfigError("--workers must be at least 1")
        if gpus > 0 and workers * gpus > cluster_gpus:
            raise ConfigError(
                f"{workers} workers x {gpus:g} GPUs need {workers * gpus:g} GPUs; the Ray cluster has {cluster_gpus:g}"
            )
        if workers * self.cpus_per_worker > cluster_cpus:
            raise ConfigError(
                f"{workers} workers x {self.cpus_per_worker:g} CPUs need {workers * self.cpus_per_worker:g} CPUs; "
                f"the Ray cluster has {cluster_cpus:g}: use fewer --workers"
            )
        return replace(self, workers=workers, gpus_per_worker=gpus)


@dataclass(frozen=True)
class IndexRequest:
    """One indexing run: what to read, into which index, with which model, chunker and storage, and how.

    ``model`` None (or "auto") means the index's own model, or the automatic choice for a new index;
    ``chunker``, ``vector_dtype`` and ``quantization`` None mean the index's own (or the defaults for a new
    index). ``reembed`` allows another model or chunker by rebuilding the index beside the old one.
    ``batch_size`` None: DEFAULT_BATCH_CHUNKS per device. ``devices`` (local engine): one model replica each.
    """

    index: str
    source: Source
    model: str | None = None
    model_path: Path | None = None
    dimensions: int | None = None  # Matryoshka models: vectors cut to this many dimensions (a new index, or --reembed)
    chunker: ChunkerSettings | None = None
    chunker_asked: str = ""  # the chunk options as the user gave them ("--chunk-tokens 100"), for messages
    vector_dtype: str | None = None
    quantization: str | None = None
    prune: bool = False
    reembed: bool = False
    replace_other_origins: bool = False  # may replace documents another surface added (API, uploads, PATH)
    batch_size: int | None = None
    engine: str = "local"
    devices: tuple[str, ...] = ()
    ray: RayOptions = field(default_factory=RayOptions)

    def __post_init__(self) -> None:
        check_request(self)

    @property
    def batch_chunks(self) -> int:
        return self.batch_size or DEFAULT_BATCH_CHUNKS * max(1, len(self.devices))

    @property
    def explicit_model(self) -> bool:
        """Whether the request names a model (or a checkpoint) rather than leaving the choice to the index."""
        named = self.model is not None and self.model.strip().lower() != "auto"
        return self.model_path is not None or named or self.dimensions is not None

    @property
    def uploads(self) -> bool:
        return isinstance(self.source, ItemsSource) and self.source.uploads

    @property
    def origin(self) -> str:
        """Which surface this run writes for: its documents are of this origin, and it replaces (and prunes)
        only documents of this origin unless ``replace_other_origins``."""
        if isinstance(self.source, ItemsSource) and self.source.uploads:
            return ORIGIN_UPLOAD
        if isinstance(self.source, ItemsSource) and self.source.api:
            return ORIGIN_API
        return ORIGIN_PATH


def check_request(r: IndexRequest) -> None:
    """Every rule between a request's options, with its one wording (ConfigError, or InputError for a
    missing path)."""
    check_index_name(r.index)
    if isinstance(r.source, PathSource) and not r.source.path.exists():
        raise InputError(f"{r.source.path}: no such file or directory")
    if r.quantization is not None and r.quantization not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {r.quantization!r}; use {' or '.join(QUANTIZATIONS)}")
    if r.vector_dtype is not None and r.vector_dtype not in VECTOR_DTYPES:
        raise ConfigError(f"unknown vector dtype {r.vector_dtype!r}; use {' or '.join(VECTOR_DTYPES)}")
    if r.batch_size is not None and r.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {r.batch_size})")
    if r.engine not in ENGINES:
        raise ConfigError(f"--engine {r.engine!r}: use local or ray")
    ray_options = (r.ray.address, r.ray.workers, r.ray.gpus_per_worker) != (None, None, None)
    if r.engine == "ray" and r.devices:
        raise ConfigError("--devices is for the local engine; with --engine ray use --workers/--gpus-per-worker")
    if r.engine == "local" and ray_options:
        raise ConfigError("--ray-address, --workers and --gpus-per-worker need --engine ray")
    if r.engine == "ray" and not isinstance(r.source, PathSource):
        raise ConfigError("--engine ray reads a path (its workers load the files); give a file or a directory")
    if isinstance(r.source, ItemsSource) and r.source.uploads and r.source.api:
        raise ConfigError("documents come either from uploads or from the API, not both")
    if r.uploads and r.prune:
        raise ConfigError("an upload cannot prune: it would remove every document that is not in the upload")
    if r.uploads and r.reembed:
        raise ConfigError("an upload cannot rebuild the index with another model or chunker; use nvrag index")
