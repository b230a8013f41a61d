"""The indexing pipeline on Ray Data: load and chunk in parallel tasks, embed in an actor pool, write Lance
fragments from the actors and commit them from the driver as they arrive.

The run keeps the single-process indexer's semantics because it shares its parts: the same load units
(plan_units / load_unit), the same chunker, the same run ledger (duplicates, unchanged chunks, stale chunks,
pruning) and the same finish (delete stale, publish a rebuild, refresh the text index, stamp the manifest).

1. Load + chunk: each task takes a few load units (files, or blocks of lines of a large JSONL file) and
   returns one row per chunk, plus a row per failure or empty document. The rows are materialised in Ray's
   object store; the driver reads only their ids to run the ledger in load order.
2. Embed + write: an ActorPoolStrategy pool (one actor per GPU, or CPU actors), each loading the model once,
   embeds the chunks not stored yet and writes each batch as a Lance fragment of the index's table.
3. Commit: the driver commits each batch's fragments as one Lance append. A crash loses at most the
   batches not committed yet (their files are unreferenced and ignored); a re-run reads what was committed
   and embeds only the rest, exactly as the single-process indexer resumes.

Ray (the ``ray`` extra: ray[data] and lance-ray) is imported only here and only when this engine runs.
"""

from __future__ import annotations

import functools
import logging
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from nvrag.embedder import Embedder
from nvrag.embedder.pinning import model_key
from nvrag.embedder.registry import LoadOptions, load_embedder
from nvrag.errors import ConfigError, NvRagError
from nvrag.indexer.chunking import chunk_document
from nvrag.indexer.formats import TableColumns
from nvrag.indexer.loaders import LoadFailure, LoadUnit, load_unit, plan_units
from nvrag.indexer.pipeline import Indexer, IndexReport, Progress, RunLedger, StopFlag, embedding_text
from nvrag.schema import Chunk, ChunkerSettings

UNITS_PER_TASK = 16  # files per load task (a directory of small files)

_CHUNK_ROWS = pa.schema(
    [
        pa.field("unit_no", pa.int64()),
        pa.field("item_no", pa.int64()),
        pa.field("source", pa.string()),
        pa.field("failure", pa.string()),  # set on a failure row (no doc_id, no chunk)
        pa.field("doc_id", pa.string()),  # set with no chunk_id: an empty document
        pa.field("chunk_id", pa.string()),
        pa.field("chunk_no", pa.int32()),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("start", pa.int64()),
        pa.field("end", pa.int64()),
        pa.field("metadata", pa.string()),  # JSON
    ]
)


_LEDGER_COLUMNS = ["unit_no", "item_no", "chunk_no", "source", "failure", "doc_id", "chunk_id"]


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run. ``address`` None starts a local Ray instance (of ``local_cpus`` CPUs,
    default all); "auto" joins the cluster this machine belongs to; "ray://host:10001" a remote one."""

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
class ModelRecipe:
    """How a worker builds the embedder: the registry name and load options (picklable, loaded lazily)."""

    name: str
    options: LoadOptions

    def load(self, *, gpu: bool) -> Embedder:
        """The embedder on this worker's GPU, or on its CPU (chunking needs only the tokenizer)."""
        if gpu:
            return load_embedder(self.name, replace(self.options, device="cuda", devices=()))
        return load_embedder(self.name, replace(self.options, device="cpu", devices=(), dtype=None, attention="auto"))


@functools.lru_cache(maxsize=4)
def _chunker_embedder(recipe: ModelRecipe) -> Embedder:
    """A worker process's tokenizer for chunking (the embedders load their weights only when they embed)."""
    return recipe.load(gpu=False)


def _rows_for_units(
    batch: dict[str, Any], recipe: ModelRecipe, settings: ChunkerSettings, key: str, columns: TableColumns
) -> pa.Table:
    """Stage 1: load and chunk a batch of units (a Ray Data task)."""
    import json

    embedder = _chunker_embedder(recipe)
    rows: dict[str, list[Any]] = {name: [] for name in _CHUNK_ROWS.names}

    def add(**values: Any) -> None:
        for name in _CHUNK_ROWS.names:
            rows[name].append(values.get(name))

    for unit_no, blob in zip(batch["unit_no"], batch["unit"], strict=True):
        unit: LoadUnit = pickle.loads(blob)
        for item_no, item in enumerate(load_unit(unit, columns)):
            where = {"unit_no": int(unit_no), "item_no": item_no, "source": item.source}
            if isinstance(item, LoadFailure):
                add(**where, failure=item.reason, doc_id=item.doc_id)
                continue
            try:
                chunks = chunk_document(item, embedder.token_spans, settings, key)
            except ValueError as exc:  # a chunk over the size limit
                add(**where, failure=str(exc), doc_id=item.doc_id)
                continue
            if not chunks:
                add(**where, doc_id=item.doc_id)
            for c in chunks:
                add(
                    **where,
                    doc_id=c.doc_id,
                    chunk_id=c.chunk_id,
                    chunk_no=c.chunk_no,
                    title=c.title,
                    text=c.text,
                    start=c.start,
                    end=c.end,
                    metadata=json.dumps(c.metadata, sort_keys=True),
                )
    return pa.table(rows, schema=_CHUNK_ROWS)


def _keep_fresh(batch: pa.Table, fresh: pa.Array) -> pa.Table:
    import pyarrow.compute as pc

    return batch.filter(pc.fill_null(pc.is_in(batch.column("chunk_id"), value_set=fresh), False))


class _EmbedWriter:
    """Stage 2, an actor: embeds a batch of chunks and writes it as a fragment of the index's dataset."""

    def __init__(
        self,
        recipe: ModelRecipe,
        gpu: bool,
        uri: str,
        dimension: int,
        vector_dtype: str,
        quantization: str,
        separator: str,
        storage: str,
    ) -> None:
        from lance_ray import LanceFragmentWriter

        from nvrag.store.lancedb_store import chunk_schema

        self.embedder = recipe.load(gpu=gpu)
        self.dimension, self.vector_dtype, self.separator = dimension, vector_dtype, separator
        self.quantization = quantization
        schema = chunk_schema(dimension, vector_dtype, quantization)
        self.writer = LanceFragmentWriter(uri, schema=schema, data_storage_version=storage)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import json

        from nvrag.store.lancedb_store import chunk_table

        chunks = [
            Chunk(
                chunk_id=r["chunk_id"],
                doc_id=r["doc_id"],
                source=r["source"],
                chunk_no=r["chunk_no"],
                text=r["text"],
                start=r["start"],
                end=r["end"],
                title=r["title"],
                metadata=json.loads(r["metadata"] or "{}"),
            )
            for r in batch.to_pylist()
        ]
        if not chunks:
            return _written([], 0)
        try:
            vectors = self.embedder.embed_documents([embedding_text(c, self.separator) for c in chunks])
        except NvRagError as exc:
            # Ray wraps a task's exception in its own and pickling drops the chain, so the domain error
            # travels as data: the driver raises it as the local engine would
            return _written([], 0, exc)
        written = self.writer(chunk_table(chunks, vectors, self.dimension, self.vector_dtype, self.quantization))
        return _written(written.column("fragment").to_pylist(), len(chunks))


def _written(fragments: list[bytes], rows: int, error: NvRagError | None = None) -> pa.Table:
    """A write's result: its pickled fragments, with the batch's row count on the first; or a domain error."""
    if error is not None:
        return pa.table(
            {"fragment": pa.array([None], pa.binary()), "rows": [0], "error": pa.array([pickle.dumps(error)])}
        )
    return pa.table(
        {
            "fragment": pa.array(fragments, pa.binary()),
            "rows": pa.array([rows] + [0] * (len(fragments) - 1) if fragments else [], pa.int64()),
            "error": pa.array([None] * len(fragments), pa.binary()),
        }
    )


def ray_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("ray", "lance_ray"))


class RayIndexer:
    """Indexes a path into a LanceDB index with Ray Data; see the module docstring."""

    def __init__(self, indexer: Indexer, recipe: ModelRecipe, options: RayOptions | None = None) -> None:
        self.indexer = indexer
        self.recipe = recipe
        self.options = options or RayOptions()

    def index(
        self,
        name: str,
        path: Path,
        *,
        columns: TableColumns | None = None,
        prune: bool = False,
        reembed: bool = False,
        stop: StopFlag | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> IndexReport:
        if not ray_available():
            raise ConfigError(
                "--engine ray needs Ray Data and lance-ray: pip install 'nvrag[ray]' (or leave out --engine)"
            )
        say = on_status or (lambda message: None)
        from nvrag.store.lancedb_store import LanceStore

        if not isinstance(self.indexer.store, LanceStore):
            raise ConfigError("--engine ray writes LanceDB indexes; use the default engine for a FAISS store")
        # everything that can be refused is checked before Ray starts and before anything is written
        units = plan_units(path, self.options.jsonl_block_lines)
        self.indexer.check(name, reembed=reembed)
        with self.indexer.store.writing(name):  # the driver is the index's one writer for the whole run
            return self._start(name, units, columns, prune, reembed, stop, say)

    def _start(
        self,
        name: str,
        units: list[LoadUnit],
        columns: TableColumns | None,
        prune: bool,
        reembed: bool,
        stop: StopFlag | None,
        say: Callable[[str], None],
    ) -> IndexReport:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            with warnings.catch_warnings():
                # Ray starts its processes with fork+exec; lancedb warns about any fork, but exec replaces
                # the child at once, so none of lancedb's state is used there
                warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
                if self.options.address is None:
                    ray.init(num_cpus=self.options.local_cpus, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.options.address, log_to_driver=False)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
            cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
            options = self.options.resolved(cpus, gpus)
            kind = f"{options.gpus_per_worker:g} GPU each" if options.gpus_per_worker else "CPU"
            say(f"ray: a cluster of {cpus:g} CPUs and {gpus:g} GPUs; {options.workers} embedding workers ({kind})")
            table, created, staged = self.indexer.open_or_create(name, reembed=reembed)
            with warnings.catch_warnings():
                # a small run has fewer blocks than actors: Ray Data's hint about idle actors is noise here
                warnings.filterwarnings(
                    "ignore", message="The minimum number of concurrent actors", category=UserWarning
                )
                return self._run(
                    name, units, table, created, staged, columns or TableColumns(), prune, stop, say, options
                )
        except Exception as exc:
            domain = _domain_error(exc)
            if domain is exc:
                raise
            raise domain from None
        finally:
            if started_here:
                ray.shutdown()

    def _run(
        self,
        name: str,
        units: list[LoadUnit],
        table: Any,
        created: bool,
        staged: bool,
        columns: TableColumns,
        prune: bool,
        stop: StopFlag | None,
        say: Callable[[str], None],
        o: RayOptions,
    ) -> IndexReport:
        import lance
        import ray.data
        from ray.data import ActorPoolStrategy

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        manifest = table.manifest
        report = IndexReport(index=name, created=created)
        ledger = RunLedger(report, table.chunk_ids_by_doc())
        key = model_key(self.indexer.embedder)

        # 1. load + chunk in parallel tasks; the rows stay in the object store
        plan = ray.data.from_items([{"unit_no": i, "unit": pickle.dumps(u)} for i, u in enumerate(units)])
        load_and_chunk = functools.partial(
            _rows_for_units, recipe=self.recipe, settings=manifest.chunker, key=key, columns=columns
        )
        say(f"loading and chunking {len(units)} files or JSONL blocks in parallel tasks")
        chunked = plan.map_batches(load_and_chunk, batch_size=UNITS_PER_TASK, batch_format="numpy").materialize()

        # the ledger, in load order, on ids only
        ids = pa.concat_tables(
            [
                pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                for b in chunked.select_columns(_LEDGER_COLUMNS).iter_batches(batch_format="pyarrow", batch_size=None)
            ]
            or [_CHUNK_ROWS.empty_table().select(_LEDGER_COLUMNS)]
        ).sort_by([("unit_no", "ascending"), ("item_no", "ascending"), ("chunk_no", "ascending")])
        fresh: set[str] = set()
        items = _items(ids)
        for source, failure, doc_id, chunk_ids in items:
            if failure is not None:
                ledger.fail(source, failure, doc_id)
            elif ledger.claim(doc_id, source):
                fresh.update(chunk_ids[i] for i in ledger.admit(doc_id, source, chunk_ids))
        progress = self.indexer.on_progress
        seen = len(items)
        say(f"{report.documents} documents: {len(fresh)} chunks to embed, {report.chunks_unchanged} unchanged")

        # 2. embed + write fragments in the actor pool; 3. commit each batch's fragments here
        if fresh:
            uri = table.dataset_uri
            dataset = lance.dataset(uri)
            storage = dataset.data_storage_version
            # the chunks to embed, one batch per block, materialised before the actors take every CPU
            todo = (
                chunked.map_batches(
                    _keep_fresh, batch_format="pyarrow", fn_kwargs={"fresh": pa.array(list(fresh), pa.string())}
                )
                .repartition(target_num_rows_per_block=self.indexer.batch_chunks)
                .materialize()
            )
            written = todo.map_batches(
                _EmbedWriter,
                batch_format="pyarrow",
                batch_size=self.indexer.batch_chunks,
                compute=ActorPoolStrategy(size=o.workers or 1),
                num_gpus=o.gpus_per_worker or None,
                num_cpus=o.cpus_per_worker,
                fn_constructor_kwargs={
                    "recipe": self.recipe,
                    "gpu": bool(o.gpus_per_worker),  # Ray shows the actor only the GPUs it was given
                    "uri": uri,
                    "dimension": manifest.dimension,
                    "vector_dtype": manifest.vector_dtype,
                    "quantization": manifest.quantization,
                    "separator": manifest.chunker.title_separator,
                    "storage": storage,
                },
            )
            for batch in written.iter_batches(batch_format="pyarrow", batch_size=None):
                for error in batch.column("error").to_pylist():
                    if error is not None:
                        raise pickle.loads(error)
                fragments = [pickle.loads(f) for f in batch.column("fragment").to_pylist()]
                if not fragments:
                    continue
                dataset = lance.LanceDataset.commit(
                    uri, lance.LanceOperation.Append(fragments), read_version=dataset.version
                )
                report.chunks_added += sum(batch.column("rows").to_pylist())
                if progress is not None:
                    progress(Progress(report.documents, report.chunks_added, seen, len(fresh)))
                if stop is not None and stop.requested:
                    report.interrupted = True
                    break
            table.reload()
        self.indexer.finish(name, table, ledger, prune=prune, staged=staged)
        return report


def _domain_error(exc: BaseException) -> BaseException:
    """The NvRagError a Ray task raised (Ray wraps it in its own exceptions), else ``exc`` itself."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, NvRagError):
            return current
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__ or current.__context__
    return exc


def _items(ids: pa.Table) -> list[tuple[str, str | None, str, list[str]]]:
    """(source, failure, doc_id, chunk ids) per loaded item, in load order."""
    items: list[tuple[str, str | None, str, list[str]]] = []
    last: tuple[int, int] | None = None
    for r in ids.to_pylist():
        at = (r["unit_no"], r["item_no"])
        if at != last:
            items.append((r["source"], r["failure"], r["doc_id"], []))
            last = at
        if r["chunk_id"] is not None:
            items[-1][3].append(r["chunk_id"])
    return items
