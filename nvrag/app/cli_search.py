"""`nvrag search`, `nvrag eval` and `nvrag info`: what comes out of an index."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.padding import Padding
from rich.table import Table as RichTable
from rich.text import Text

from nvrag.app.cli_common import (
    DbOption,
    DtypeOption,
    IndexOption,
    InstructionOption,
    JsonOption,
    ModelOption,
    ModelPathOption,
    QueryDtypeOption,
    RerankDepthOption,
    RerankInstructionOption,
    RerankOption,
    TaskOption,
    app,
    err,
    model_lines,
    out,
    printable,
    safe,
    user_errors,
)
from nvrag.app.cli_rerank import instruction_note, reranker_line
from nvrag.app.progress import index_progress
from nvrag.app.settings import Settings
from nvrag.app.wiring import build_retriever, choose, load_model, load_rerank_model, open_store
from nvrag.embedder import REGISTRY, TASK_INSTRUCTIONS, resolve_instruction
from nvrag.embedder.dtypes import choose_dtype
from nvrag.errors import ConfigError, Hint, IndexNotFoundError, ManifestVersionError
from nvrag.evaluation import METRICS, evaluate
from nvrag.evaluation.plot import save_plot
from nvrag.limits import MAX_K, MAX_RERANK_DEPTH
from nvrag.reranker.loading import KNOWN_RERANKERS
from nvrag.retriever import DEFAULT_RERANK_DEPTH, DEFAULT_RRF_K, MODES, parse_filters
from nvrag.retriever.dense import check_rerank


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The query text.")],
    index: IndexOption = "default",
    k: Annotated[int, typer.Option("-k", "--top-k", help="How many hits to return.", min=1, max=MAX_K)] = 10,
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
    rrf_k: Annotated[
        int, typer.Option("--rrf-k", min=1, help="Reciprocal rank fusion constant (hybrid mode; 1 or more).")
    ] = DEFAULT_RRF_K,
    rerank: RerankOption = None,
    rerank_depth: RerankDepthOption = DEFAULT_RERANK_DEPTH,
    rerank_instruction: RerankInstructionOption = None,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    dtype: QueryDtypeOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search an index with its own model; --model other than the index's is refused. --rerank adds a second
    stage: the first --rerank-depth candidates scored by a reranker (each hit keeps its retrieval rank and score)."""
    with user_errors():
        if not query.strip():
            raise ConfigError("the query is empty; give some text to search for")
        settings = Settings.from_env(db=db, dtype=dtype)
        store = open_store(settings)
        if not store.exists(index):
            try:
                store.open(index)  # raises IndexNotFoundError naming the known indexes
            except IndexNotFoundError as exc:
                build = f"build it first: nvrag index PATH --index {index}"
                todo = "name one of them with --index NAME" if store.list_indexes() else build
                raise IndexNotFoundError(exc.message, hint=Hint(cli=todo)) from None
        retriever = build_retriever(settings, store, index, model, model_path)
        text = resolve_instruction(task, instruction)
        if mode not in MODES:
            raise ConfigError(f"unknown --mode {mode!r}; use dense, bm25 or hybrid")
        if text is not None and mode == "bm25" and mmr_lambda is None:
            err.print("note: --mode bm25 matches words and embeds no query; --task/--instruction are not used")
        elif text is not None and not retriever.embedder.info.takes_instructions:
            err.print(f"note: {safe(retriever.embedder.name)} takes no query instruction; searching without it")
        if rrf_k != DEFAULT_RRF_K and mode != "hybrid":
            err.print(f"note: --rrf-k applies to --mode hybrid; --mode {mode} does not use it")
        conditions = parse_filters(filters or [])
        if rerank is None and (rerank_instruction is not None or rerank_depth != DEFAULT_RERANK_DEPTH):
            raise ConfigError("--rerank-depth and --rerank-instruction apply with --rerank MODEL_OR_PATH")
        reranker = load_rerank_model(settings, rerank) if rerank is not None else None
        if reranker is not None:
            check_rerank(k, rerank_depth, mmr_lambda)  # before any search: a wrong depth is one line
            note = instruction_note(reranker, rerank_instruction)
            if note:
                err.print(note.replace("--instruction", "--rerank-instruction"))
        hits = retriever.search(
            query,
            k,
            instruction=text,
            mode=mode,  # checked against MODES above
            filters=conditions,
            min_score=min_score,
            mmr_lambda=mmr_lambda,
            rrf_k=rrf_k,
            reranker=reranker,
            rerank_depth=rerank_depth,
            rerank_instruction=rerank_instruction,
        )
    # after the search: a mistake above is one line; this one says how the queries were computed
    err.print(f"model: {safe(retriever.embedder.name)}, computing queries in {safe(retriever.embedder.computes)}")
    for note in retriever.embedder.notes:
        err.print(safe(note))
    if reranker is not None:
        err.print(reranker_line(reranker))
    if as_json:
        out.print_json(data=[h.to_dict() for h in hits])
        return
    if not hits:
        if retriever.table.count() == 0:
            err.print(f"no results: index {safe(repr(index))} is empty")
        else:
            err.print(
                "no results: nothing matched"
                + (" the filter" if filters else "")
                + (" above --min-score" if min_score is not None else "")
            )
        return
    table = RichTable(show_lines=False, title=f"{len(hits)} hits for {safe(repr(query))} in {safe(repr(index))}")
    table.add_column("#", justify="right")
    if reranker is not None:
        table.add_column("rerank", justify="right")
        table.add_column("was", justify="right")  # the first stage's rank
    table.add_column("score", justify="right")
    table.add_column("doc_id")
    table.add_column("text")
    for hit in hits:
        snippet = " ".join(hit.text.split())
        snippet = snippet if len(snippet) <= 160 else snippet[:157] + "..."
        reranks = (f"{hit.rerank_score:.4f}", f"#{hit.retrieval_rank}") if reranker is not None else ()
        table.add_row(str(hit.rank), *reranks, f"{hit.score:.3f}", safe(hit.doc_id), safe(snippet))
    out.print(table)


@app.command(name="eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="A BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.")
    ],
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    dtype: DtypeOption = None,
    task: Annotated[
        str | None,
        typer.Option("--task", "-t", help="Query instruction preset (default: the dataset's name when it is one)."),
    ] = None,
    instruction: InstructionOption = None,
    split: Annotated[str, typer.Option("--split", help="Which qrels/SPLIT.tsv to evaluate.")] = "test",
    mode: Annotated[str, typer.Option("--mode", help="dense, bm25 or hybrid.")] = "dense",
    chunked: Annotated[
        bool,
        typer.Option("--chunked", help="Evaluate a chunked index (a document scores as its best chunk)."),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write DIR/metrics.json and DIR/metrics.png.")
    ] = None,
    index: Annotated[
        str | None, typer.Option("--index", help="Index to build or reuse (default: eval-DATASET-MODEL-doc|chunked).")
    ] = None,
    rerank: RerankOption = None,
    rerank_depth: Annotated[
        int,
        typer.Option("--rerank-depth", min=1, max=MAX_RERANK_DEPTH, help="Documents per query the reranker reorders."),
    ] = DEFAULT_RERANK_DEPTH,
    rerank_instruction: RerankInstructionOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure retrieval quality on a BEIR dataset: nDCG@10, MAP@100, Recall@100, MRR@10 (pytrec_eval).

    Follows the MTEB protocol by default (one vector per document from title + " " + text, queries with the
    task's instruction, a query's own id never counted), so results compare with published figures. The
    index is built once and reused: re-running embeds nothing. --rerank scores the same run reranked too (each
    query's first --rerank-depth documents reordered), the two rows side by side.
    """
    with user_errors():
        if mode not in MODES:
            raise ConfigError(f"unknown --mode {mode!r}; use dense, bm25 or hybrid")
        if task is None and instruction is None and dataset.name.lower() in {t.lower() for t in TASK_INSTRUCTIONS}:
            task = dataset.name
        text = resolve_instruction(task, instruction)
        settings = Settings.from_env(db=db, dtype=dtype)
        store = open_store(settings)
        if rerank is None and (rerank_instruction is not None or rerank_depth != DEFAULT_RERANK_DEPTH):
            raise ConfigError("--rerank-depth and --rerank-instruction apply with --rerank MODEL_OR_PATH")
        reranker = load_rerank_model(settings, rerank) if rerank is not None else None
        choice = choose(settings, model, model_path)
        embedder = load_model(settings, choice.name, model_path=choice.model_path)
        err.print(model_lines(choice.reason, choice.license, embedder.notes, embedder.computes))
        if text is not None:
            note = "" if embedder.info.takes_instructions else f" (ignored: {embedder.name} takes no instruction)"
            note = " (not used: --mode bm25 matches words and embeds no query)" if mode == "bm25" else note
            err.print(f"query instruction: {safe(repr(text))}{safe(note)}")
        if reranker is not None:
            err.print(reranker_line(reranker))
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
                reranker=reranker,
                rerank_depth=rerank_depth,
                rerank_instruction=rerank_instruction,
            )
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            (output / "metrics.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
            save_plot(result, output / "metrics.png")
    for line in result.skipped:
        err.print(f"note: {safe(line)}")
    reused = result.indexing.chunks_added == 0
    err.print(
        f"index {safe(repr(result.index))}: {'reused' if reused else 'built'} in {result.seconds_indexing:.1f} s; "
        f"{result.queries} queries in {result.seconds_queries:.1f} s"
    )
    if as_json:
        out.print_json(data=result.to_json())
        return
    table = RichTable(title=safe(f"{result.dataset} ({result.split}) - {result.model} - {result.mode}"))
    if result.reranked is not None:
        err.print(f"reranked {result.queries} queries in {result.reranked.seconds:.1f} s")
        table.add_column("run")
    for name in METRICS:
        table.add_column(name, justify="right")
    if result.reranked is None:
        table.add_row(*(f"{100 * result.metrics[name]:.2f}" for name in METRICS))
    else:
        rows = (("retrieval", result.metrics), (f"reranked top {result.reranked.depth}", result.reranked.metrics))
        for label, metrics in rows:
            table.add_row(label, *(f"{100 * metrics[name]:.2f}" for name in METRICS))
    out.print(table)
    if output is not None:
        out.print(f"wrote {safe(output / 'metrics.json')} and {safe(output / 'metrics.png')}")


@app.command()
def info(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the indexes (model, dimension, rows, updated time) and the available models."""
    with user_errors():
        settings = Settings.from_env(db=db)
        store = open_store(settings)
        tables, unreadable = [], {}
        for name in store.list_indexes():
            try:
                tables.append(store.open(name))
            except ManifestVersionError as exc:  # one index from a newer nvrag: list the others
                unreadable[name] = str(exc)
        try:
            cpu_dtype = choose_dtype(settings.dtype, "cpu")
        except ConfigError:  # e.g. NVRAG_DTYPE=float16 on a GPU machine: a listing still lists
            cpu_dtype = choose_dtype(None, "cpu")
    if as_json:
        out.print_json(
            data={
                "db": settings.db,
                "indexes": [{"manifest": t.manifest.to_dict(), "rows": t.count()} for t in tables],
                "unreadable": [{"name": name, "error": why} for name, why in unreadable.items()],
                "models": [
                    {"name": s.name, "dimension": s.dimension, "max_tokens": s.max_tokens, "license": s.license}
                    for s in REGISTRY.values()
                ],
                "rerankers": [
                    {"name": r.hub_id, "kind": r.kind, "license": r.license, "description": r.description}
                    for r in KNOWN_RERANKERS
                ],
                "cpu_dtype": {"default": cpu_dtype.name, "reason": cpu_dtype.reason},
            }
        )
        return
    out.print(f"data directory: {safe(settings.db)}")
    out.print(f"dtype on this CPU: {cpu_dtype.name} ({safe(cpu_dtype.reason)}); --dtype float32 for exact vectors")
    if tables:
        # a list, not a table: a name is what one types next, and a table's columns on an 80-column terminal
        # cut names, times and descriptions into pieces; a list wraps at spaces, each entry's name first
        out.print("\n[bold]indexes[/]")
        for t in tables:
            m = t.manifest
            facts = (
                f"{m.dimension} dimensions, {m.compute_dtype}, {t.count()} rows, chunks of {m.chunker.chunk_tokens} "
                f"tokens (overlap {m.chunker.overlap_tokens}), updated {minutes(m.updated_at)} UTC"
            )
            listed(printable(m.name), printable(m.model), printable(facts))
    elif not unreadable:
        out.print("no indexes yet: create one with `nvrag index PATH --index NAME`")
    for why in unreadable.values():
        err.print(f"[yellow]warning:[/] {safe(why)}")
    # model names are what --model and --rerank-model take: each whole on its own line, what it is below (a
    # table of five columns left its descriptions a few letters wide on an 80-column terminal)
    out.print("\n[bold]models[/] (--model)")
    for s in REGISTRY.values():
        limit = f"max tokens {s.max_tokens}" if s.max_tokens is not None else "max tokens from its checkpoint"
        listed(s.name, f"{s.dimension} dimensions, {limit}, license {s.license}", s.description)
    out.print("\n[bold]rerankers[/] (--rerank-model, from the Hugging Face cache or a folder)")
    for r in KNOWN_RERANKERS:
        listed(r.hub_id, f"{r.kind}, license {r.license}", r.description)


def listed(name: str, facts: str, about: str = "") -> None:
    """One entry of ``nvrag info``'s lists: its name, the facts beside it, what it is (if said) indented below;
    wrapped at spaces to the terminal's width here (the console's own soft wrap would cut a padded line)."""
    out.print(Padding(Text.assemble((name, "bold"), "  ", facts), (0, 0, 0, 2), expand=False), soft_wrap=False)
    if about:
        out.print(Padding(Text(about), (0, 0, 0, 6), expand=False), soft_wrap=False)


def minutes(iso: str) -> str:
    """A manifest's UTC time as 'YYYY-MM-DD HH:MM' (as written, if it is not an ISO time)."""
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso
