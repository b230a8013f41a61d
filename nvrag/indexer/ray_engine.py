"""The indexing pipeline on Ray Data: load and chunk in parallel tasks, embed in an actor pool, write Lance
fragments from the actors and commit them from the driver as they arrive.

The run keeps the local engine's semantics because it shares its parts: the same load units (plan_units /
load_unit), the same chunker, the same open_run and RunLedger (pinning, duplicates, unchanged chunks, stale
chunks, pruning) and the same finish_run (delete stale, publish a rebuild, refresh the text index, stamp the
manifest).

1. Load + chunk: each task takes a few load units (files, or blocks of lines of a large JSONL file) and
   returns one row per chunk, plus a row per failure or empty document. The rows are materialised in Ray's
   object store; the driver reads only their ids to run the ledger in load order.
2. Embed + stage: an ActorPoolStrategy pool (one actor per GPU, or CPU actors), each loading the model once,
   embeds the chunks not stored yet and stages each batch with the table writer's stager (for LanceDB:
   fragment files of the index's dataset, which no reader sees yet).
3. Commit: the driver commits through the same table writer, whole documents at a time: a batch waits until
   every document it touches is staged whole (whole_documents.py), then goes in one transaction with those
   documents' old chunks removed, so a reader never sees a partial or doubled document. A crash loses at
   most the batches not committed yet; a re-run reads what was committed and embeds only the rest, exactly
   as the local engine resumes. The store owns every write: this module never touches LanceDB itself.

What the workers run (stages 1 and 2) is in ray_tasks.py. Ray (the ``ray`` extra) is imported only here and
only when this engine runs.
"""

from __future__ import annotations

import functools
import logging
import pickle
import warnings
from collections.abc import Callable

import pyarrow as pa

from nvrag.embedder import Embedder
from nvrag.embedder.registry import ModelRecipe
from nvrag.errors import ConfigError, NvRagError
from nvrag.indexer.engine import (
    Engine,
    Progress,
    ProgressFn,
    Run,
    StopFlag,
    finish_run,
    open_run,
)
from nvrag.indexer.formats import TableColumns
from nvrag.indexer.ledger import IndexReport
from nvrag.indexer.loaders import LoadUnit, plan_units
from nvrag.indexer.ray_tasks import CHUNK_ROWS, LEDGER_COLUMNS, UNITS_PER_TASK, EmbedStager, keep_fresh, rows_for_units
from nvrag.indexer.request import IndexRequest, PathSource, RayOptions
from nvrag.indexer.whole_documents import WholeDocuments
from nvrag.store import Store
from nvrag.store.base import Staged


def ray_available() -> bool:
    """The ray extra: Ray Data and lance-ray."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("ray", "lance"))


class RayEngine(Engine):
    """Runs path requests on Ray Data (``request.ray`` says where and how wide); see the module docstring.
    ``embedder`` is the driver's (its tokenizer and identity; the workers load their own from ``recipe``)."""

    def __init__(
        self, store: Store, embedder: Embedder, recipe: ModelRecipe, on_status: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(store, embedder)
        self.recipe = recipe
        self.say = on_status or (lambda message: None)  # status lines for the user (the CLI prints them)

    def check(self, request: IndexRequest) -> None:
        if not ray_available():
            raise ConfigError(
                "--engine ray needs Ray Data and lance-ray: pip install 'nvrag[ray]' (or leave out --engine)"
            )
        if not self.store.distributed_writes:
            raise ConfigError(
                f"--engine ray writes LanceDB indexes ({type(self.store).__name__} writes in this process only): "
                "unset NVRAG_STORE=faiss or use --engine local"
            )

    def _run(self, request: IndexRequest, progress: ProgressFn | None, stop: StopFlag | None) -> IndexReport:
        import ray

        assert isinstance(request.source, PathSource)  # check_request: the Ray engine reads a path
        units = plan_units(request.source.path, request.ray.jsonl_block_lines, request.source.exclude)
        started_here = not ray.is_initialized()
        if started_here:
            with warnings.catch_warnings():
                # Ray starts its processes with fork+exec; lancedb warns about any fork, but exec replaces
                # the child at once, so none of lancedb's state is used there
                warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
                if request.ray.address is None:
                    ray.init(num_cpus=request.ray.local_cpus, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=request.ray.address, log_to_driver=False)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
            cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
            options = request.ray.resolved(cpus, gpus)
            kind = f"{options.gpus_per_worker:g} GPU each" if options.gpus_per_worker else "CPU"
            self.say(f"ray: a cluster of {cpus:g} CPUs and {gpus:g} GPUs; {options.workers} embedding workers ({kind})")
            run = open_run(self.store, self.embedder, request)
            with warnings.catch_warnings():
                # a small run has fewer blocks than actors: Ray Data's hint about idle actors is noise here
                warnings.filterwarnings(
                    "ignore", message="The minimum number of concurrent actors", category=UserWarning
                )
                self._execute(run, units, request.source.columns, options, progress, stop)
            return finish_run(self.store, run)
        except Exception as exc:
            domain = _domain_error(exc)
            if domain is exc:
                raise
            raise domain from None
        finally:
            if started_here:
                ray.shutdown()

    def _execute(
        self,
        run: Run,
        units: list[LoadUnit],
        columns: TableColumns,
        o: RayOptions,
        progress: ProgressFn | None,
        stop: StopFlag | None,
    ) -> None:
        import ray.data
        from ray.data import ActorPoolStrategy

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.execution_options.preserve_order = True  # batches in load order: documents complete soonest
        report, ledger = run.report, run.ledger

        # 1. load + chunk in parallel tasks; the rows stay in the object store
        plan = ray.data.from_items([{"unit_no": i, "unit": pickle.dumps(u)} for i, u in enumerate(units)])
        load_and_chunk = functools.partial(
            rows_for_units, recipe=self.recipe, settings=run.chunker, key=run.model_key, columns=columns
        )
        self.say(f"loading and chunking {len(units)} files or JSONL blocks in parallel tasks")
        chunked = plan.map_batches(load_and_chunk, batch_size=UNITS_PER_TASK, batch_format="numpy").materialize()

        # the ledger, in load order, on ids only
        ids = pa.concat_tables(
            [
                pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                for b in chunked.select_columns(LEDGER_COLUMNS).iter_batches(batch_format="pyarrow", batch_size=None)
            ]
            or [CHUNK_ROWS.empty_table().select(LEDGER_COLUMNS)]
        ).sort_by([("unit_no", "ascending"), ("item_no", "ascending"), ("chunk_no", "ascending")])
        fresh: set[str] = set()
        needed: dict[str, int] = {}  # doc id -> its chunks to embed
        items = _items(ids)
        for source, failure, doc_id, chunk_ids in items:
            if failure is not None:
                ledger.fail(source, failure, doc_id)
            elif ledger.claim(doc_id, source):
                admitted = ledger.admit(doc_id, source, chunk_ids)
                fresh.update(chunk_ids[i] for i in admitted)
                needed[doc_id] = len(admitted)
        self.say(f"{report.documents} documents: {len(fresh)} chunks to embed, {report.chunks_unchanged} unchanged")
        if not fresh:
            return

        # 2. embed + stage in the actor pool; 3. commit each batch here, through the table's writer
        batch_chunks = run.request.batch_chunks
        # the chunks to embed, one batch per block, materialised before the actors take every CPU
        todo = (
            chunked.map_batches(
                keep_fresh, batch_format="pyarrow", fn_kwargs={"fresh": pa.array(list(fresh), pa.string())}
            )
            .repartition(target_num_rows_per_block=batch_chunks)
            .materialize()
        )
        staged_batches = todo.map_batches(
            EmbedStager,
            batch_format="pyarrow",
            batch_size=batch_chunks,
            compute=ActorPoolStrategy(size=o.workers or 1),
            num_gpus=o.gpus_per_worker or None,
            num_cpus=o.cpus_per_worker,
            fn_constructor_kwargs={
                "recipe": self.recipe,
                "gpu": bool(o.gpus_per_worker),  # Ray shows the actor only the GPUs it was given
                "stager": run.writer.stager(),
                "separator": run.chunker.title_separator,
            },
        )
        # a document's new chunks and the removal of its old ones commit together, though a batch may hold part
        # of a document: batches wait until every document they touch is staged whole
        whole: WholeDocuments[Staged] = WholeDocuments(needed)
        for block in staged_batches.iter_batches(batch_format="pyarrow", batch_size=None):
            for staged, counts in (pickle.loads(b) for b in block.column("staged").to_pylist()):
                if isinstance(staged, NvRagError):
                    raise staged
                ready = whole.add(staged, counts)
                if ready is None:
                    continue
                batches, docs = ready
                replaced = ledger.release(docs)
                run.writer.commit(batches, replaced)
                report.chunks_added += sum(s.rows for s in batches)
                report.chunks_removed += len(replaced)
            if progress is not None:
                progress(Progress(report.documents, report.chunks_added, len(items), len(fresh)))
            if stop is not None and stop.requested:
                report.interrupted = True  # held batches are never committed: their documents stay as they were
                break


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
