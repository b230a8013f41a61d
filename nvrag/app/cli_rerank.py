"""`nvrag rerank`: a query and documents in, the documents' relevance scores out, best first."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nvrag.app.cli_common import DtypeOption, JsonOption, app, err, out, read_json_texts, safe, user_errors
from nvrag.app.serving import reranker_model_line
from nvrag.app.settings import Settings
from nvrag.app.wiring import load_rerank_model
from nvrag.errors import ConfigError, InputError
from nvrag.reranker import Reranker, RerankResult, ranked

PREVIEW_CHARS = 100  # a document's text shown in the table


def reranker_line(reranker: Reranker) -> str:
    """The reranker's line (serving.reranker_model_line), escaped for the console."""
    return "\n".join(map(safe, reranker_model_line(reranker).splitlines()))


def instruction_note(reranker: Reranker, instruction: str | None) -> str | None:
    """The line to show when an instruction was given to a reranker that takes none (it is not used)."""
    if instruction is not None and not reranker.takes_instructions:
        return f"note: {safe(reranker.name)} takes no instruction; --instruction is not used"
    return None


def results_body(model: str, results: list[RerankResult]) -> dict[str, object]:
    """The JSON body `nvrag rerank --json` prints, the same as /v1/rerank's (without its usage)."""
    return {"model": model, "results": [{"index": r.index, "relevance_score": r.relevance_score} for r in results]}


@app.command()
def rerank(
    query: Annotated[str, typer.Argument(help="The query.", show_default=False)],
    documents: Annotated[
        list[str] | None, typer.Argument(help="Documents to score (or use --input).", show_default=False)
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", help="JSON lines: each a JSON string or an object with a 'text' field; '-' reads stdin."
        ),
    ] = None,
    model_path: Annotated[
        Path | None,
        typer.Option(
            "--model-path",
            help="The reranker's checkpoint folder: a BERT or XLM-RoBERTa cross-encoder, a Llama Nemotron "
            "reranker or a Qwen3-Reranker-style LLM (recognised by its own files; docs/reranking.md).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="A known reranker's hub id (e.g. Qwen/Qwen3-Reranker-0.6B), read from the Hugging Face cache.",
            show_default=False,
        ),
    ] = None,
    instruction: Annotated[
        str | None,
        typer.Option(
            "--instruction", help="What relevance means, for LLM rerankers (default: the model card's web search one)."
        ),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            min=2,
            help="Tokens per (query, document) pair, template included; longer documents are cut "
            "(default: the checkpoint's limit, at most 8192).",
            show_default=False,
        ),
    ] = None,
    top_n: Annotated[
        int | None, typer.Option("--top-n", min=1, help="Show only the N best.", show_default=False)
    ] = None,
    dtype: DtypeOption = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if present).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score documents against a query with a reranker; print them best first (index = input position)."""
    with user_errors():
        texts = list(documents or []) + (read_json_texts(input_file) if input_file is not None else [])
        if not texts:
            raise InputError("nothing to rerank: give documents as arguments or --input FILE (or '-' for stdin)")
        if (model_path is None) == (model is None):
            raise ConfigError("give the reranker with --model-path DIR or --model HUB_ID (one of them)")
        settings = Settings.from_env()
        if dtype or device:
            settings = replace(settings, dtype=dtype or settings.dtype, device=device or settings.device)
        reranker = load_rerank_model(settings, model_path if model_path is not None else str(model), max_length)
        err.print(reranker_line(reranker))
        note = instruction_note(reranker, instruction)
        if note:
            err.print(note)
        scores = reranker.score(query, texts, instruction)
        results = ranked(scores, top_n)
        if as_json:
            sys.stdout.write(json.dumps(results_body(reranker.name, results)) + "\n")
            return
        table = Table("rank", "index", "score", "document")
        for rank, result in enumerate(results, start=1):
            text = " ".join(texts[result.index].split())
            preview = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
            table.add_row(str(rank), str(result.index), f"{result.relevance_score:.4f}", safe(preview))
        out.print(table)
