"""`nvrag embed`: texts in, vectors out (documents or queries), as .npy or JSON lines."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from nvrag.app.cli_common import (
    DimensionsOption,
    DtypeOption,
    InstructionOption,
    ModelOption,
    ModelPathOption,
    TaskOption,
    app,
    err,
    model_lines,
    read_json_texts,
    safe,
    user_errors,
)
from nvrag.app.devices import parse_devices
from nvrag.app.settings import Settings
from nvrag.app.wiring import choose, load_model
from nvrag.embedder import resolve_instruction
from nvrag.errors import ConfigError, InputError


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
        items = list(texts or []) + (read_json_texts(input_file) if input_file is not None else [])
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
        err.print(model_lines(choice.reason, choice.license, embedder.notes, embedder.computes))
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
