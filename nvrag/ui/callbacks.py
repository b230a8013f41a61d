"""The UI's behaviour as plain functions over a ``UIContext``: unit-testable without Gradio or a browser.

Every user mistake (empty query, unknown index, bad filter, too-large upload) comes back as a message in the
page, never as an exception or a traceback.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nvrag.embedder import TASK_INSTRUCTIONS, resolve_instruction
from nvrag.errors import NvRagError
from nvrag.indexer import Indexer, IndexReport, load_corpus
from nvrag.retriever import MODES, Retriever, parse_filters
from nvrag.store import Store
from nvrag.ui.render import message, result_cards

DEFAULT_TASK = "(model default)"
CUSTOM_TASK = "Custom instruction"
TASK_CHOICES = [DEFAULT_TASK, *sorted(TASK_INSTRUCTIONS), CUSTOM_TASK]
MAX_K = 50
MAX_QUERY_CHARS = 1000
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class UIContext:
    """What the UI needs: the store, how to get a retriever and an indexer for an index, where uploads go."""

    store: Store
    retriever_for: Callable[[str], Retriever]
    indexer_for: Callable[[str], Indexer]
    upload_root: Path
    source_url: str | None = "/source"  # None: no links to source files (e.g. when a login is required)
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    _lock: threading.Lock = field(default_factory=threading.Lock)


def index_choices(ctx: UIContext) -> list[str]:
    return ctx.store.list_indexes()


def search(
    ctx: UIContext,
    index: str | None,
    query: str,
    task: str,
    instruction: str,
    k: float,
    mode: str,
    filters: str,
) -> str:
    """Results HTML for one search, or a helpful message."""
    query = (query or "").strip()
    if not query:
        return message("Type a query and press Enter.")
    if len(query) > MAX_QUERY_CHARS:
        return message(f"The query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}.", error=True)
    if not index or not ctx.store.exists(index):
        known = ", ".join(ctx.store.list_indexes()) or "none yet"
        return message(f"Choose an index (available: {known}).", error=True)
    if mode not in MODES:
        return message(f"Unknown mode {mode!r}.", error=True)
    k_int = max(1, min(MAX_K, int(k)))
    try:
        retriever = ctx.retriever_for(index)
        if retriever.table.count() == 0:
            return message(f"Index {index!r} is empty: add files in the Index tab.")
        chosen = None
        if task == CUSTOM_TASK:
            chosen = resolve_instruction(instruction=instruction.strip() or None)
        elif task and task != DEFAULT_TASK:
            chosen = resolve_instruction(task=task)
        hits = retriever.search(
            query,
            k_int,
            instruction=chosen,
            mode=mode,  # checked against MODES above
            filters=parse_filters([filters or ""]),
        )
    except NvRagError as exc:
        prefix = "Bad filter: " if "filter" in type(exc).__name__.lower() else ""
        return message(f"{prefix}{exc}", error=True)
    if not hits:
        return message("No results." + (" Nothing matched the filter." if (filters or "").strip() else ""))
    return result_cards(hits, query, ctx.source_url, index, mode)


def index_info(ctx: UIContext, index: str | None) -> str:
    """The selected index's manifest as Markdown."""
    if not index or not ctx.store.exists(index):
        return "No index selected. Create one with `nvrag index PATH --index NAME`, or upload files below."
    table = ctx.store.open(index)
    m = table.manifest
    rows = [
        ("model", m.model),
        ("license", m.license),
        ("dimension", str(m.dimension)),
        ("rows (chunks)", str(table.count())),
        ("chunker", f"{m.chunker.mode}, {m.chunker.chunk_tokens} tokens, {m.chunker.overlap_tokens} overlap"),
        ("model revision", m.model_revision),
        ("created", m.created_at),
        ("updated", m.updated_at),
    ]
    return f"### Index `{index}`\n\n| | |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def safe_name(name: str) -> str:
    """A file name with no directory part and only [A-Za-z0-9._-]; never empty, never hidden."""
    base = _UNSAFE.sub("_", Path(name.replace("\\", "/")).name).strip("._") or "upload"
    return base[:120]


def upload(ctx: UIContext, index: str | None, files: Sequence[str] | None) -> str:
    """Store uploaded files under the index's upload folder and index them; a Markdown report."""
    if not index:
        return "Choose or type an index name first."
    if not files:
        return "Choose files to upload (.txt, .md, .jsonl)."
    target = ctx.upload_root / safe_name(index)
    skipped: list[str] = []
    accepted: list[Path] = []
    for file in files:
        path = Path(file)
        name = safe_name(path.name)
        if path.suffix.lower() not in UPLOAD_SUFFIXES:
            skipped.append(f"{path.name}: type not accepted (use {', '.join(UPLOAD_SUFFIXES)})")
            continue
        if path.stat().st_size > ctx.max_upload_bytes:
            skipped.append(f"{path.name}: larger than {ctx.max_upload_bytes // (1024 * 1024)} MB")
            continue
        target.mkdir(parents=True, exist_ok=True)
        destination = target / name
        shutil.copyfile(path, destination)
        accepted.append(destination)
    report = IndexReport(index=index)
    if accepted:
        try:
            with ctx._lock:  # one indexing run at a time
                indexer = ctx.indexer_for(index)
                for destination in accepted:
                    part = indexer.index(index, load_corpus(destination))
                    report.documents += part.documents
                    report.chunks_added += part.chunks_added
                    report.chunks_unchanged += part.chunks_unchanged
                    report.failures.extend(part.failures)
        except NvRagError as exc:
            return f"**Could not index the files:** {exc}"
    lines = [
        f"**Indexed into `{index}`:** {report.documents} documents, {report.chunks_added} chunks added, "
        f"{report.chunks_unchanged} unchanged."
    ]
    problems = skipped + [f"{Path(f.source).name}: {f.reason}" for f in report.failures]
    if problems:
        lines.append("\n**Skipped:**\n" + "\n".join(f"- {p}" for p in problems))
    return "\n".join(lines)
