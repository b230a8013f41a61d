"""`nvrag index` and `nvrag optimize`: what goes into an index."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from nvrag.app.cli_common import (
    EXIT_INPUT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_REPORT_FAILED,
    DbOption,
    DimensionsOption,
    DtypeOption,
    IndexOption,
    JsonOption,
    ModelOption,
    ModelPathOption,
    app,
    err,
    fail,
    interruptible,
    model_lines,
    out,
    safe,
    user_errors,
)
from nvrag.app.devices import parse_devices
from nvrag.app.progress import index_progress
from nvrag.app.settings import Settings
from nvrag.app.wiring import build_retriever, index_engine, open_store
from nvrag.errors import ConfigError
from nvrag.indexer import Engine, IndexReport, IndexRequest, PathSource, RayOptions
from nvrag.indexer.formats import TableColumns
from nvrag.indexer.loaders import SUPPORTED_SUFFIXES
from nvrag.retriever.probing import probe_queries, wants_probe
from nvrag.schema import ChunkerSettings


@app.command()
def index(
    path: Annotated[
        Path,
        typer.Argument(
            help="A file or a directory (read recursively): .txt, .md, .html, .pdf, .docx, .jsonl, .json, "
            ".csv, .tsv, .parquet."
        ),
    ],
    index: IndexOption = "default",
    model: ModelOption = None,
    chunk_tokens: Annotated[
        int | None, typer.Option(help="Tokens per chunk (default 200, capped at the model's limit).")
    ] = None,
    overlap: Annotated[int | None, typer.Option(help="Tokens shared by neighbouring chunks (default 32).")] = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove documents that are no longer in PATH (only PATH's own: API documents and uploads stay).",
        ),
    ] = False,
    replace_other_origins: Annotated[
        bool,
        typer.Option(
            "--replace-other-origins",
            help="Let PATH's documents replace documents of the same id added through the API or uploaded.",
        ),
    ] = False,
    vector_dtype: Annotated[
        str | None,
        typer.Option(
            "--vector-dtype", help="New index (or --reembed): float32, or float16 for half the memory (LanceDB)."
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize",
            help="New index (or --reembed): binary keeps a sign bit per dimension that searches scan (1/32 of "
            "float32), then rescores the candidates with the full vectors (LanceDB; for 4,096-d NV-Embed indexes).",
        ),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            help="One model replica per device: cuda:0,cuda:1,... or auto (every GPU); work split by tokens.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Chunks embedded and committed together; a crash loses at most one batch "
            "(default 256, times the number of --devices so that every device gets work).",
        ),
    ] = None,
    reembed: Annotated[
        bool,
        typer.Option(
            "--reembed",
            help="Allow another model or chunker for an existing index: rebuild it beside the old one and "
            "switch when done (the old index stays searchable until then).",
        ),
    ] = False,
    id_column: Annotated[str, typer.Option("--id-column", help="Tables and JSON: the id column.")] = "id",
    text_column: Annotated[str, typer.Option("--text-column", help="Tables and JSON: the text column.")] = "text",
    title_column: Annotated[str, typer.Option("--title-column", help="Tables and JSON: the title column.")] = "title",
    metadata_columns: Annotated[
        str | None,
        typer.Option(
            "--metadata-columns",
            help="Tables and JSON: comma-separated columns kept as metadata (default: all others).",
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local: this process; ray: Ray Data (parallel loading and chunking, an actor pool of model "
            "replicas writing LanceDB fragments; needs the 'ray' extra). Same index either way.",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="--engine ray: auto (this machine's cluster), ray://HOST:10001, or unset: start one."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="--engine ray: embedding actors (default: one per GPU, or 1 on CPUs)."),
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-worker", min=0.0, help="--engine ray: GPUs per actor (default: 1 if the cluster has GPUs)."
        ),
    ] = None,
    model_path: ModelPathOption = None,
    dimensions: DimensionsOption = None,
    dtype: DtypeOption = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="After this run, keep the index in step with PATH until Ctrl-C: new and changed files are "
            "embedded, deleted ones removed (as --prune), one line per change.",
        ),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index documents into a named index; re-running embeds only new or changed chunks.

    JSONL files hold one object per line with "id" and "text", an optional "title", and any other
    fields as metadata. Files or lines that cannot be read are reported and skipped; the report is also
    written as JSON next to the index (DB/INDEX.report.json). Ctrl-C stops after the batch in flight; running
    the same command again continues. Exit codes: 0 done; 1 some inputs failed; 2 usage error; 3 the report
    could not be written; 75 another process is writing the index; 130 stopped.
    """
    with user_errors():
        settings = Settings.from_env(db=db, dtype=dtype)
        request = IndexRequest(
            index,
            PathSource(path, _columns(id_column, text_column, title_column, metadata_columns)),
            model=model,
            model_path=model_path,
            dimensions=dimensions,
            **_chunking(chunk_tokens, overlap),
            vector_dtype=vector_dtype,
            quantization=quantize,
            prune=prune,
            reembed=reembed,
            replace_other_origins=replace_other_origins,
            batch_size=batch_size,
            engine=engine,
            devices=parse_devices(devices),
            ray=RayOptions(address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker),
        )
        if watch and engine != "local":
            raise ConfigError("--watch runs the local engine; leave out --engine ray")
        runner, choice = index_engine(settings, open_store(settings), request, on_status=err.print)
        model_line = model_lines(choice.reason, choice.license, choice.notes, choice.computes)
        with interruptible() as stop, index_progress(err, first_line=model_line) as progress:
            report = runner.run(request, progress, stop)
    report_error = _write_report(settings, index, report)
    _print_report(report, as_json)
    if watch and not report.interrupted:
        _watch(settings, replace(request, prune=True, reembed=False), runner, path)
        return
    if report.interrupted:
        err.print(f"stopped early: {report.chunks_added} chunks were stored; run the same command again to continue")
        raise typer.Exit(EXIT_INTERRUPTED)
    if report_error is not None:
        raise fail(report_error, EXIT_REPORT_FAILED)
    if report.failed:
        raise typer.Exit(EXIT_INPUT_FAILURES)
    if report.documents == 0 and report.skipped and not report.interrupted:
        known = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise fail(f"{path}: no document nvrag can read was found there; it reads {known}", EXIT_INPUT_FAILURES)


def _watch(settings: Settings, request: IndexRequest, runner: Engine, path: Path) -> None:
    """Re-run ``request`` on every change under ``path`` until Ctrl-C, a line per run (watching.py)."""
    from nvrag.app.watching import watch_and_rerun

    def again() -> IndexReport:
        with user_errors(), interruptible() as stop:
            return runner.run(request, None, stop)

    def said(changed: list[Path], report: IndexReport) -> None:
        _write_report(settings, request.index, report)
        for failure in report.failures:
            err.print(f"[yellow]skipped[/] {safe(failure.source)}: {safe(failure.reason)}")
        names = ", ".join(safe(c.name) for c in changed[:3]) + (
            f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        err.print(
            f"{dt.datetime.now().strftime('%H:%M:%S')} {names} changed: {report.chunks_added} chunks added, "
            f"{report.chunks_removed} chunks removed, {report.documents_removed} documents removed, "
            f"{report.failed} failed"
        )

    local = "://" not in settings.db
    ignore = (Path(settings.db).expanduser(),) if local else ()
    err.print(f"watching {safe(path)} for changes (Ctrl-C stops)")
    watch_and_rerun(path, again, said, ignore=ignore)
    err.print("stopped watching")


def _columns(id_column: str, text_column: str, title_column: str, metadata: str | None) -> TableColumns:
    kept = tuple(c.strip() for c in metadata.split(",") if c.strip()) if metadata is not None else None
    return TableColumns(id=id_column, text=text_column, title=title_column, metadata=kept)


def _print_report(report: IndexReport, as_json: bool) -> None:
    if as_json:
        out.print_json(data=report.to_dict())
        return
    for failure in report.failures:
        err.print(f"[yellow]skipped[/] {safe(failure.source)}: {safe(failure.reason)}")
    if report.skipped:
        kinds = ", ".join(f"{safe(suffix)} x{n}" for suffix, n in sorted(report.skipped.items()))
        err.print(f"[yellow]skipped[/] files of types nvrag does not read: {kinds}")
    if report.not_in_path:
        err.print(
            f"{report.not_in_path} documents of the index are not in PATH any more (or come from another PATH); "
            "--prune removes them"
        )
    name = safe(repr(report.index))
    if report.chunks_added == 0 and report.chunks_removed == 0 and not report.reembedded:
        err.print(
            f"index {name} is up to date: {report.documents} documents, "
            f"{report.chunks_unchanged} chunks unchanged, nothing to embed"
        )
        return
    verb = "rebuilt" if report.reembedded else "created" if report.created else "updated"
    # "chunks removed": a changed document's old chunks; documents leave the index only with --prune
    pruned = f", {report.documents_removed} documents removed" if report.documents_removed else ""
    err.print(
        f"index {name} {verb}: {report.documents} documents, {report.chunks_added} chunks added, "
        f"{report.chunks_unchanged} unchanged, {report.chunks_removed} chunks removed{pruned}, {report.failed} failed"
    )


def _write_report(settings: Settings, index: str, report: IndexReport) -> str | None:
    """Write the run's report as JSON next to the index (local data directories only); why it could not be
    written, or None. The index itself is already committed either way."""
    if "://" in settings.db:
        return None
    payload = {**report.to_dict(), "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    path = Path(settings.db).expanduser() / f"{index}.report.json"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)  # never a half-written report
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        return (
            f"index {index!r} was written, but its run report could not be written to {path} "
            f"({exc.strerror or exc}); make the data directory writable, or use --json to get the report on stdout"
        )
    return None


def _chunker(chunk_tokens: int | None, overlap: int | None) -> ChunkerSettings | None:
    if chunk_tokens is None and overlap is None:
        return None  # the index's own settings, or the defaults for a new index
    default = ChunkerSettings()
    size = chunk_tokens if chunk_tokens is not None else default.chunk_tokens
    return ChunkerSettings(
        chunk_tokens=size, overlap_tokens=overlap if overlap is not None else min(default.overlap_tokens, size // 4)
    )


def _chunking(chunk_tokens: int | None, overlap: int | None) -> dict[str, Any]:
    """IndexRequest's ``chunker`` from the chunk options, and ``chunker_asked``: the options exactly as given,
    with the default the other one took, for a refusal to quote."""
    settings = _chunker(chunk_tokens, overlap)
    if settings is None:
        asked = ""
    elif chunk_tokens is not None and overlap is not None:
        asked = f"--chunk-tokens {chunk_tokens} --overlap {overlap}"
    elif chunk_tokens is not None:
        asked = f"--chunk-tokens {chunk_tokens} (with its default overlap, {settings.overlap_tokens})"
    else:
        asked = f"--overlap {overlap} (with the default chunk size, {settings.chunk_tokens})"
    return {"chunker": settings, "chunker_asked": asked}


@app.command()
def optimize(
    index: Annotated[str, typer.Argument(help="The index to optimise.")],
    ann: Annotated[
        str,
        typer.Option(
            "--ann",
            help="The approximate vector index: auto (the store's best: ivf-rq on LanceDB from 256 dimensions, "
            "else ivf-pq), ivf-rq (LanceDB), ivf-pq or hnsw; none drops it.",
        ),
    ] = "auto",
    probe: Annotated[
        str,
        typer.Option(
            "--probe",
            help="What the recall probe that picks the search setting searches with: queries (short spans of the "
            "index's chunks embedded as queries with its model, like real searches) or vectors (its own stored "
            "vectors: no model loaded, but they overrate recall).",
        ),
    ] = "queries",
    db: DbOption = None,
) -> None:
    """Build an approximate-nearest-neighbour vector index for a large index (5,000 rows or more).

    Searches then probe the ANN index and re-rank candidates with the full vectors; smaller indexes stay exact.

    On LanceDB a recall probe picks the partitions searches probe and the candidates they re-rank; it says so.

    Appends keep the ANN and full-text indexes current (nvrag index refreshes them).
    """
    with user_errors():
        if probe not in ("queries", "vectors"):
            raise ConfigError(f"unknown --probe {probe!r}; use queries or vectors")
        settings = Settings.from_env(db=db)
        store = open_store(settings)
        table = store.open(index)
        with store.writing(index):
            queries = None
            if probe == "queries" and wants_probe(table, ann):
                err.print(
                    f"embedding the recall probe's queries with {table.manifest.model} (--probe vectors skips this)"
                )
                queries = probe_queries(build_retriever(settings, store, index, None))
            err.print(safe(table.build_ann(ann, queries)))
