"""The `nvrag` command line. Domain errors become one red line and an exit code here, and only here.

Exit codes: 0 success; 1 the run finished but some inputs could not be indexed (see the report);
2 a usage error or a user mistake (missing path, unknown index or model, model mismatch); 130 indexing was
stopped with Ctrl-C (running it again continues).
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table as RichTable

from nvrag import __version__
from nvrag.app.progress import index_progress
from nvrag.app.settings import ENV_DB, ENV_MODEL, Settings
from nvrag.app.wiring import build_indexer, build_retriever, build_web_app, choose, load_model, open_store
from nvrag.embedder import REGISTRY, TASK_INSTRUCTIONS, resolve_instruction
from nvrag.errors import ConfigError, InputError, NvRagError
from nvrag.evaluation import METRICS, evaluate
from nvrag.evaluation.plot import save_plot
from nvrag.indexer import IndexReport, StopFlag, load_corpus
from nvrag.indexer.formats import TableColumns
from nvrag.indexer.loaders import count_items
from nvrag.retriever import MODES, parse_filters
from nvrag.schema import ChunkerSettings, Hit

EXIT_OK = 0
EXIT_INPUT_FAILURES = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C

app = typer.Typer(
    name="nvrag",
    help=(
        "Index documents with NV-Embed-v2 (or the bundled all-MiniLM-L6-v2) into LanceDB and search them.\n\n"
        "Exit codes: 0 success; 1 indexing finished but some inputs failed (listed in the report); "
        "2 a usage error or a user mistake (missing path, unknown index or model, model mismatch); "
        "130 indexing stopped by Ctrl-C (run it again to continue)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", envvar=ENV_DB, help="LanceDB data directory (default: the user data dir).", show_default=False
    ),
]
IndexOption = Annotated[str, typer.Option("--index", "-i", help="Name of the index.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar=ENV_MODEL,
        help="Model name or 'auto' (NV-Embed-v2 on a CUDA GPU with its weights, else the bundled MiniLM). "
        "An existing index always uses its own model.",
        show_default=False,
    ),
]
ModelPathOption = Annotated[
    Path | None,
    typer.Option(
        "--model-path",
        help="Load the model from this checkpoint folder (an NV-Embed checkpoint, recognised by its config.json).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
TaskOption = Annotated[
    str | None, typer.Option("--task", "-t", help="Query instruction preset by task name, e.g. SciFact.")
]
InstructionOption = Annotated[
    str | None, typer.Option("--instruction", help="Free-text query instruction (instead of --task).")
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn nvrag's domain errors into one clear line and exit code 2."""
    try:
        yield
    except NvRagError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_USER_ERROR) from None


def version_callback(value: bool) -> None:
    if value:
        out.print(f"nvrag {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """nvrag: retrieval with NV-Embed-v2 over LanceDB."""


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
        bool, typer.Option("--prune", help="Remove chunks of documents that are no longer in PATH.")
    ] = False,
    vector_dtype: Annotated[
        str,
        typer.Option(
            "--vector-dtype", help="New index (or --reembed): float32, or float16 for half the memory (LanceDB)."
        ),
    ] = "float32",
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", min=1, help="Chunks embedded and committed together; a crash loses at most one batch."
        ),
    ] = 256,
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
    model_path: ModelPathOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index documents into a named index; re-running embeds only new or changed chunks.

    JSONL files hold one object per line with "id" and "text", an optional "title", and any other
    fields as metadata. Files or lines that cannot be read are reported and skipped; the report is also
    written as JSON next to the index (DB/INDEX.report.json). Ctrl-C stops after the batch in flight; running
    the same command again continues. Exit codes: 0 done; 1 some inputs failed; 2 usage error; 130 stopped.
    """
    with user_errors():
        settings = Settings.from_env(db=db)
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
        store = open_store(settings)
        chunker = _chunker(chunk_tokens, overlap)
        indexer, choice = build_indexer(settings, store, index, model, chunker, model_path, reembed=reembed)
        indexer.check(index, reembed=reembed)
        indexer.batch_chunks = batch_size
        indexer.vector_dtype = vector_dtype
        err.print(f"model: {choice.reason} (license {choice.license})")
        stop = StopFlag()
        previous = signal.getsignal(signal.SIGINT)

        def on_interrupt(signum: int, frame: object) -> None:
            if stop.requested:
                raise KeyboardInterrupt
            stop.set()
            err.print("stopping after the batch in flight (Ctrl-C again to abort at once)")

        signal.signal(signal.SIGINT, on_interrupt)
        try:
            with index_progress(err, count_items(path)) as on_progress:
                indexer.on_progress = on_progress
                columns = TableColumns(
                    id=id_column,
                    text=text_column,
                    title=title_column,
                    metadata=tuple(c.strip() for c in metadata_columns.split(",") if c.strip())
                    if metadata_columns is not None
                    else None,
                )
                report = indexer.index(index, load_corpus(path, columns), prune=prune, reembed=reembed, stop=stop)
        finally:
            signal.signal(signal.SIGINT, previous)
        _write_report(settings, index, report)
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        for failure in report.failures:
            err.print(f"[yellow]skipped[/] {failure.source}: {failure.reason}")
        verb = "rebuilt" if report.reembedded else "created" if report.created else "updated"
        if report.chunks_added == 0 and report.chunks_removed == 0 and not report.reembedded:
            err.print(
                f"index {index!r} is up to date: {report.documents} documents, {report.chunks_unchanged} chunks "
                "unchanged, nothing to embed"
            )
        else:
            err.print(
                f"index {index!r} {verb}: {report.documents} documents, {report.chunks_added} chunks added, "
                f"{report.chunks_unchanged} unchanged, {report.chunks_removed} removed, {report.failed} failed"
            )
    if report.interrupted:
        err.print(f"stopped early: {report.chunks_added} chunks were stored; run the same command again to continue")
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_INPUT_FAILURES)


def _write_report(settings: Settings, index: str, report: IndexReport) -> None:
    """The run's report as JSON next to the index (local data directories only)."""
    if "://" in settings.db:
        return
    payload = {**report.to_dict(), "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    (Path(settings.db).expanduser() / f"{index}.report.json").write_text(
        json.dumps(payload, indent=2) + "\n", encoding="utf-8"
    )


def _chunker(chunk_tokens: int | None, overlap: int | None) -> ChunkerSettings | None:
    if chunk_tokens is None and overlap is None:
        return None  # the index's own settings, or the defaults for a new index
    default = ChunkerSettings()
    size = chunk_tokens if chunk_tokens is not None else default.chunk_tokens
    return ChunkerSettings(
        chunk_tokens=size, overlap_tokens=overlap if overlap is not None else min(default.overlap_tokens, size // 4)
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The query text.")],
    index: IndexOption = "default",
    k: Annotated[int, typer.Option("-k", "--top-k", help="How many hits to return.", min=1, max=1000)] = 10,
    task: TaskOption = None,
    instruction: InstructionOption = None,
    mode: Annotated[
        str, typer.Option("--mode", help="dense (embeddings), bm25 (full text) or hybrid (both, fused by RRF).")
    ] = "dense",
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help='Metadata condition, e.g. "lang = en", "year >= 2020", "kind in (a, b)"; '
            "join with 'and' or repeat the option (all must hold). See docs/search.md.",
        ),
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Drop hits scoring lower (cosine, BM25 or RRF by mode).")
    ] = None,
    mmr_lambda: Annotated[
        float | None,
        typer.Option("--mmr", help="Diversify with maximal marginal relevance: 1 = relevance only, 0 = most diverse."),
    ] = None,
    rrf_k: Annotated[int, typer.Option("--rrf-k", help="Reciprocal rank fusion constant (hybrid mode).")] = 60,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search an index with its own model; --model other than the index's is refused."""
    with user_errors():
        if not query.strip():
            raise ConfigError("the query is empty; give some text to search for")
        settings = Settings.from_env(db=db)
        store = open_store(settings)
        if not store.exists(index):
            store.open(index)  # raises IndexNotFoundError naming the known indexes
        retriever = build_retriever(settings, store, index, model, model_path)
        text = resolve_instruction(task, instruction)
        if text is not None and not retriever.embedder.info.takes_instructions:
            err.print(f"note: {retriever.embedder.name} takes no query instruction; searching without it")
        if mode not in MODES:
            raise ConfigError(f"unknown --mode {mode!r}; use dense, bm25 or hybrid")
        conditions = parse_filters(filters or [])
        hits = retriever.search(
            query,
            k,
            instruction=text,
            mode=mode,  # checked against MODES above
            filters=conditions,
            min_score=min_score,
            mmr_lambda=mmr_lambda,
            rrf_k=rrf_k,
        )
    if as_json:
        out.print_json(data=[_hit_json(h) for h in hits])
        return
    if not hits:
        if retriever.table.count() == 0:
            err.print(f"no results: index {index!r} is empty")
        else:
            err.print(
                "no results: nothing matched"
                + (" the filter" if filters else "")
                + (" above --min-score" if min_score is not None else "")
            )
        return
    table = RichTable(show_lines=False, title=f"{len(hits)} hits for {query!r} in {index!r}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("doc_id")
    table.add_column("text")
    for hit in hits:
        snippet = " ".join(hit.text.split())
        snippet = snippet if len(snippet) <= 160 else snippet[:157] + "..."
        table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.doc_id, snippet)
    out.print(table)


def _hit_json(hit: Hit) -> dict[str, object]:
    return {
        "rank": hit.rank,
        "score": round(hit.score, 6),
        "doc_id": hit.doc_id,
        "source": hit.source,
        "text": hit.text,
        "title": hit.title,
        "chunk_no": hit.chunk_no,
        "start": hit.start,
        "end": hit.end,
        "metadata": hit.metadata,
        "page": hit.page,
        "dense_rank": hit.dense_rank,
        "dense_score": hit.dense_score,
        "bm25_rank": hit.bm25_rank,
        "bm25_score": hit.bm25_score,
    }


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
    query: Annotated[bool, typer.Option("--query", help="Embed as queries (with the instruction).")] = False,
    task: TaskOption = None,
    instruction: InstructionOption = None,
    prefix: Annotated[
        str | None,
        typer.Option(
            "--prefix",
            help="A raw instruction string put before every text exactly as given (NV-Embed's reference "
            "`instruction` argument: no template; empty means passage mode). Excludes --query.",
        ),
    ] = None,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Truncate inputs to N tokens (BOS and instruction included).")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="float32, float16 or bfloat16 (default: bf16 on CUDA, else fp32).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if present).")
    ] = None,
) -> None:
    """Embed texts as documents (default) or queries; output JSON lines or a .npy array, in input order."""
    with user_errors():
        items = list(texts or []) + (_read_texts(input_file) if input_file is not None else [])
        if not items:
            raise InputError("nothing to embed: give texts as arguments or --input FILE (or '-' for stdin)")
        if (task or instruction) and not query:
            raise ConfigError("--task and --instruction apply to queries; add --query")
        if prefix is not None and query:
            raise ConfigError("--prefix is a raw instruction used as is; give either --prefix or --query, not both")
        settings = replace(Settings.from_env(), dtype=dtype, device=device) if dtype or device else Settings.from_env()
        choice = choose(settings, model, model_path)
        err.print(f"model: {choice.reason} (license {choice.license})")
        embedder = load_model(settings, choice.name, model_path=choice.model_path, max_length=max_length)
        if prefix is not None:
            vectors = embedder.embed_with_prefix(items, prefix)
        elif query:
            vectors = embedder.embed_queries(items, instruction=resolve_instruction(task, instruction))
        else:
            vectors = embedder.embed_documents(items)
        if output is not None and output.suffix == ".npy":
            np.save(output, vectors.astype(np.float32))
            err.print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 to {output}")
            return
        lines = "".join(json.dumps({"embedding": [float(x) for x in v]}) + "\n" for v in vectors)
        if output is None:
            sys.stdout.write(lines)
        else:
            output.write_text(lines, encoding="utf-8")
            err.print(f"wrote {len(vectors)} embeddings to {output}")


def _read_texts(path: Path) -> list[str]:
    if str(path) == "-":
        lines = sys.stdin.read().splitlines()
        where = "stdin"
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--input {path}: cannot read it ({exc})") from exc
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


@app.command(name="eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="A BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.")
    ],
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    task: Annotated[
        str | None,
        typer.Option("--task", "-t", help="Query instruction preset (default: the dataset's name when it is one)."),
    ] = None,
    instruction: InstructionOption = None,
    split: Annotated[str, typer.Option("--split", help="Which qrels/SPLIT.tsv to evaluate.")] = "test",
    mode: Annotated[str, typer.Option("--mode", help="dense, bm25 or hybrid.")] = "dense",
    chunked: Annotated[
        bool, typer.Option("--chunked", help="Evaluate a chunked index (a document scores as its best chunk).")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write DIR/metrics.json and DIR/metrics.png.")
    ] = None,
    index: Annotated[
        str | None, typer.Option("--index", help="Index to build or reuse (default: eval-DATASET-MODEL-doc|chunked).")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure retrieval quality on a BEIR dataset: nDCG@10, MAP@100, Recall@100, MRR@10 (pytrec_eval).

    Follows the MTEB protocol by default (one vector per document from title + " " + text, queries with the
    task's instruction, a query's own id never counted), so results compare with published figures. The
    index is built once and reused: re-running embeds nothing.
    """
    with user_errors():
        if mode not in MODES:
            raise ConfigError(f"unknown --mode {mode!r}; use dense, bm25 or hybrid")
        if task is None and instruction is None and dataset.name.lower() in {t.lower() for t in TASK_INSTRUCTIONS}:
            task = dataset.name
        text = resolve_instruction(task, instruction)
        settings = Settings.from_env(db=db)
        store = open_store(settings)
        choice = choose(settings, model, model_path)
        embedder = load_model(settings, choice.name, model_path=choice.model_path)
        err.print(f"model: {choice.reason} (license {choice.license})")
        if text is not None:
            note = "" if embedder.info.takes_instructions else f" (ignored: {embedder.name} takes no instruction)"
            err.print(f"query instruction: {text!r}{note}")
        with index_progress(err) as on_progress:
            result = evaluate(
                dataset,
                store,
                embedder,
                split=split,
                mode=mode,  # checked against MODES above
                instruction=text,
                chunked=chunked,
                index=index,
                on_progress=on_progress,
            )
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            (output / "metrics.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
            save_plot(result, output / "metrics.png")
    for line in result.skipped:
        err.print(f"note: {line}")
    reused = result.indexing.chunks_added == 0
    err.print(
        f"index {result.index!r}: {'reused' if reused else 'built'} in {result.seconds_indexing:.1f} s; "
        f"{result.queries} queries in {result.seconds_queries:.1f} s"
    )
    if as_json:
        out.print_json(data=result.to_json())
        return
    table = RichTable(title=f"{result.dataset} ({result.split}) - {result.model} - {result.mode}")
    for name in METRICS:
        table.add_column(name, justify="right")
    table.add_row(*(f"{100 * result.metrics[name]:.2f}" for name in METRICS))
    out.print(table)
    if output is not None:
        out.print(f"wrote {output / 'metrics.json'} and {output / 'metrics.png'}")


@app.command()
def ui(
    index: Annotated[str | None, typer.Option("--index", "-i", help="Index selected when the page opens.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; the default serves this machine only.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7860,
    db: DbOption = None,
) -> None:
    """Start the web search UI (Gradio). Loopback only by default; no public share link.

    Set NVRAG_UI_USER and NVRAG_UI_PASSWORD to require a login. Uploads are limited to .txt, .md and .jsonl
    files of 20 MB and stored, with sanitised names, under the data directory's uploads/ folder.
    """
    with user_errors():
        settings = Settings.from_env(db=db)
        store = open_store(settings)
        if index is not None and not store.exists(index):
            store.open(index)  # raises IndexNotFoundError naming the known indexes
        server = build_web_app(settings, store, index)
    where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    err.print(f"nvrag UI on {where} (Ctrl-C stops it)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] listening on {host}: other machines can reach this UI")
    import uvicorn

    uvicorn.run(server, host=host, port=port, log_level="warning")


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
        err.print(store.open(index).build_ann(ann))


@app.command()
def info(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the indexes (model, dimension, rows, updated time) and the available models."""
    with user_errors():
        settings = Settings.from_env(db=db)
        store = open_store(settings)
        tables = [store.open(name) for name in store.list_indexes()]
    if as_json:
        out.print_json(
            data={
                "db": settings.db,
                "indexes": [{"manifest": t.manifest.to_dict(), "rows": t.count()} for t in tables],
                "models": [
                    {"name": s.name, "dimension": s.dimension, "max_tokens": s.max_tokens, "license": s.license}
                    for s in REGISTRY.values()
                ],
            }
        )
        return
    out.print(f"data directory: {settings.db}")
    if tables:
        table = RichTable(title="indexes")
        for column in ("index", "model", "dim", "rows", "chunker", "updated"):
            table.add_column(column)
        for t in tables:
            m = t.manifest
            chunker = f"{m.chunker.chunk_tokens}/{m.chunker.overlap_tokens}"
            table.add_row(m.name, m.model, str(m.dimension), str(t.count()), chunker, m.updated_at)
        out.print(table)
    else:
        out.print("no indexes yet: create one with `nvrag index PATH --index NAME`")
    models = RichTable(title="models")
    for column in ("model", "dim", "max tokens", "license", "about"):
        models.add_column(column)
    for s in REGISTRY.values():
        models.add_row(s.name, str(s.dimension), str(s.max_tokens), s.license, s.description)
    out.print(models)


def main() -> None:
    app()
