"""`nvrag index`, `nvrag embed` and `nvrag optimize`: what goes into an index."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from nvrag.app.cli_common import (
    EXIT_INPUT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_REPORT_FAILED,
    DbOption,
    DimensionsOption,
    DtypeOption,
    IndexOption,
    InstructionOption,
    JsonOption,
    ModelOption,
    ModelPathOption,
    TaskOption,
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
from nvrag.app.wiring import choose, index_engine, load_model, open_store
from nvrag.embedder import resolve_instruction
from nvrag.errors import ConfigError, InputError
from nvrag.indexer import IndexReport, IndexRequest, PathSource, RayOptions, reading
from nvrag.indexer.formats import TableColumns
from nvrag.indexer.loaders import SUPPORTED_SUFFIXES
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
            chunker=_chunker(chunk_tokens, overlap),
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
        runner, choice = index_engine(settings, open_store(settings), request, on_status=err.print)
        model_line = model_lines(choice.reason, choice.license, choice.notes)
        with interruptible() as stop, index_progress(err, first_line=model_line) as progress:
            report = runner.run(request, progress, stop)
    report_error = _write_report(settings, index, report)
    _print_report(report, as_json)
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
    err.print(
        f"index {name} {verb}: {report.documents} documents, {report.chunks_added} chunks added, "
        f"{report.chunks_unchanged} unchanged, {report.chunks_removed} removed, {report.failed} failed"
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


@app.command()
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed (or use --input).")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="JSON lines: each a JSON string or an object with a 'text' field; '-' reads stdin.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write .npy (float32 [n, dim]) or .jsonl; default stdout.")
    ] = None,
    query: Annotated[
        bool,
        typer.Option(
            "--query",
            help="Embed as queries (with the instruction); the bundled model then computes float32 on a CPU "
            "unless --dtype says otherwise.",
        ),
    ] = False,
    task: TaskOption = None,
    instruction: InstructionOption = None,
    prefix: Annotated[
        str | None,
        typer.Option(
            "--prefix",
            help="A raw prompt put before every text exactly as given, in place of the model's prompt (documents "
            'and queries alike; for NV-Embed, the reference\'s `instruction` argument). --prefix "" means none.',
        ),
    ] = None,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    dimensions: DimensionsOption = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Truncate inputs to N tokens (BOS and instruction included).")
    ] = None,
    dtype: DtypeOption = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if present).")
    ] = None,
    devices: Annotated[
        str | None, typer.Option("--devices", help="One replica per device: cuda:0,cuda:1,... or auto.")
    ] = None,
) -> None:
    """Embed texts as documents (default) or queries; output JSON lines or a .npy array, in input order."""
    with user_errors():
        items = list(texts or []) + (_read_texts(input_file) if input_file is not None else [])
        if not items:
            raise InputError("nothing to embed: give texts as arguments or --input FILE (or '-' for stdin)")
        if (task or instruction) and not query:
            raise ConfigError("--task and --instruction apply to queries; add --query")
        if prefix is not None and (task or instruction):
            raise ConfigError("--prefix replaces the prompt exactly; give either --prefix or --task/--instruction")
        settings = Settings.from_env()
        if dtype or device:
            settings = replace(settings, dtype=dtype, device=device)
        if devices:
            settings = replace(settings, devices=parse_devices(devices))
        choice = choose(settings, model, model_path)
        if output is not None and not output.parent.is_dir():
            raise ConfigError(f"--output {output}: the directory {output.parent} does not exist; create it first")
        embedder = load_model(
            settings,
            choice.name,
            model_path=choice.model_path,
            max_length=max_length,
            for_queries=query,
            dimensions=dimensions,
        )
        err.print(model_lines(choice.reason, choice.license, embedder.notes))
        if prefix is not None:
            vectors = embedder.embed_with_prefix(items, prefix)
        elif query:
            vectors = embedder.embed_queries(items, instruction=resolve_instruction(task, instruction))
        else:
            vectors = embedder.embed_documents(items)
        try:
            if output is not None and output.suffix == ".npy":
                np.save(output, vectors.astype(np.float32))
                err.print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 to {safe(output)}")
                return
            lines = "".join(json.dumps({"embedding": [float(x) for x in v]}) + "\n" for v in vectors)
            if output is None:
                sys.stdout.write(lines)
            else:
                output.write_text(lines, encoding="utf-8")
                err.print(f"wrote {len(vectors)} embeddings to {safe(output)}")
        except OSError as exc:
            raise ConfigError(f"--output {output}: cannot write it ({exc.strerror or exc})") from None


def _read_texts(path: Path) -> list[str]:
    if str(path) == "-":
        lines = sys.stdin.read().splitlines()
        where = "stdin"
    else:
        try:
            lines = reading.read_bytes(path).decode("utf-8").splitlines()
        except (OSError, ValueError) as exc:  # missing, not a regular file, too large, not UTF-8
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InputError(f"--input {path}: cannot read it ({reason})") from None
        where = str(path)
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(
                f"{where} line {number}: not JSON; each line must be a JSON string or an object with 'text'"
            ) from None
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            texts.append(value["text"])
        elif isinstance(value, str):
            texts.append(value)
        else:
            raise InputError(f"{where} line {number}: expected a JSON string or an object with a 'text' string")
    return texts


@app.command()
def optimize(
    index: Annotated[str, typer.Argument(help="The index to optimise.")],
    ann: Annotated[
        str, typer.Option("--ann", help="ivf-pq or hnsw: build an approximate vector index; none: drop it.")
    ] = "ivf-pq",
    db: DbOption = None,
) -> None:
    """Build an approximate-nearest-neighbour vector index for a large index (5,000 rows or more).

    Searches then probe the ANN index and re-rank candidates with the full vectors. Smaller indexes stay exact.
    Appends keep the ANN and full-text indexes current (nvrag index refreshes them).
    """
    with user_errors():
        store = open_store(Settings.from_env(db=db))
        table = store.open(index)
        with store.writing(index):
            err.print(safe(table.build_ann(ann)))
