"""The UI's behaviour as plain functions over a ``UIContext``: unit-testable without Gradio or a browser.

Every user mistake (empty query, unknown index, bad filter, too-large upload) comes back as a message in the
page, never as an exception or a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from nvrag.embedder import TASK_INSTRUCTIONS, resolve_instruction
from nvrag.errors import NvRagError
from nvrag.indexer import IndexReport, IndexRequest, ItemsSource, LoadFailure, load_corpus, reading
from nvrag.indexer.loaders import UPLOAD_PREFIX, split_line
from nvrag.limits import MAX_K_SHOWN, MAX_QUERY_CHARS
from nvrag.reranker import Reranker
from nvrag.retriever import DEFAULT_RERANK_DEPTH, MODES, Retriever, parse_filters
from nvrag.schema import Document
from nvrag.store import Store
from nvrag.ui.render import md, message, result_cards

DEFAULT_TASK = "(model default)"
CUSTOM_TASK = "Custom instruction"
TASK_CHOICES = [DEFAULT_TASK, *sorted(TASK_INSTRUCTIONS), CUSTOM_TASK]
MAX_K = MAX_K_SHOWN  # documents per page of results
CHUNKS_PER_DOCUMENT = 4  # chunks searched per document shown: a document's other passages fill its card
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class UIContext:
    """What the UI needs: the store, a retriever for an index, how to run an indexing request, where uploads go."""

    store: Store
    retriever_for: Callable[[str], Retriever]
    run_index: Callable[[IndexRequest], IndexReport]
    upload_root: Path
    source_url: str | None = "/source"  # None: no links to source files (e.g. when a login is required)
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    received_root: Path | None = None  # where the web server puts the bytes it receives; uploads come from here
    # (index, document ids, origins or None) -> chunks removed; None: delete_documents on the store
    delete_documents: Callable[[str, Sequence[str], set[str] | None], int] | None = None
    reranker: Reranker | None = None  # the page offers "Rerank" when there is one
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
    rerank: bool = False,
) -> str:
    """Results HTML for one search, or a helpful message. ``rerank``: the first stage's candidates reordered by
    the context's reranker (at least RERANK_DEPTH of them)."""
    query = (query or "").strip()
    if not query:
        return message("Type a query and press Enter.")
    for what, value in (("query", query), ("instruction", instruction or ""), ("filter", filters or "")):
        if len(value) > MAX_QUERY_CHARS:
            return message(f"The {what} is {len(value)} characters long; the limit is {MAX_QUERY_CHARS}.", error=True)
    if not index or not ctx.store.exists(index):
        known = ", ".join(ctx.store.list_indexes()) or "none yet"  # message() escapes it
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
        reranker = ctx.reranker if rerank else None
        if rerank and reranker is None:
            return message("This server has no reranker: start it with --rerank.", error=True)
        depth = k_int * CHUNKS_PER_DOCUMENT  # deeper, so that k documents fill their cards after grouping
        hits = retriever.search(
            query,
            depth,
            instruction=chosen,
            mode=mode,  # checked against MODES above
            filters=parse_filters([filters or ""]),
            reranker=reranker,
            rerank_depth=max(depth, DEFAULT_RERANK_DEPTH),
        )
    except NvRagError as exc:
        prefix = "Bad filter: " if "filter" in type(exc).__name__.lower() else ""
        return message(f"{prefix}{exc.for_api()}", error=True)
    if not hits:
        return message("No results." + (" Nothing matched the filter." if (filters or "").strip() else ""))
    return result_cards(hits, query, ctx.source_url, index, mode, limit=k_int)


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
        ("computed in", m.compute_dtype),
        ("stored as", m.vector_dtype + (", with binary quantisation" if m.quantization == "binary" else "")),
        ("rows (chunks)", str(table.count())),
        ("chunker", f"{m.chunker.mode}, {m.chunker.chunk_tokens} tokens, {m.chunker.overlap_tokens} overlap"),
        ("model revision", m.model_revision),
        ("created", m.created_at),
        ("updated", m.updated_at),
    ]
    body = "\n".join(f"| {k} | {md(v)} |" for k, v in rows)
    return f"### Index {md(index)}\n\n| field | value |\n| --- | --- |\n{body}"


def filter_fields(ctx: UIContext, index: str | None) -> str:
    """What the filter box can name for ``index``: the chunk's own fields and its metadata keys (none listed for
    an index too large to scan)."""
    own = "doc_id, source, title, chunk_no"
    if not index or not ctx.store.exists(index):
        return f"Fields: {own}, and the documents' metadata keys"
    try:
        keys = ctx.store.open(index).metadata_fields()
    except NvRagError:
        keys = None
    if keys is None:
        return f"Fields: {own}, and the documents' metadata keys"
    listed = ", ".join(sorted(keys)[:40]) + (" ..." if len(keys) > 40 else "")
    return f"Fields: {own}" + (f"; metadata: {listed}" if keys else "; this index has no metadata keys")


def safe_name(name: str) -> str:
    """A file name with no directory part and only [A-Za-z0-9._-]; never empty, never hidden."""
    base = _UNSAFE.sub("_", Path(name.replace("\\", "/")).name).strip("._") or "upload"
    return base[:120]


def stored_name(name: str, data: bytes) -> str:
    """Where an upload is kept: its sanitised name with a hash of its bytes before the suffix. Two files whose
    names sanitise alike never overwrite each other; the same bytes uploaded twice are one document."""
    base = Path(safe_name(name))
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"{base.stem[:100]}.{digest}{base.suffix.lower()}"


def _received(ctx: UIContext, path: Path) -> bytes:
    """The bytes of a file the server received as an upload: a regular file inside the upload folder
    (anything else was named by the client, not sent by it), at most max_upload_bytes, read with limits."""
    if ctx.received_root is not None:
        root = os.path.realpath(ctx.received_root)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise reading.RejectedInputError("not a file uploaded to this server; refused")
    return reading.read_bytes(path, ctx.max_upload_bytes)


def _namespaced(item: Document | LoadFailure, stored: str) -> Document | LoadFailure:
    """An uploaded item with its id in the upload namespace: upload:FILE, or upload:FILE#ID for JSONL lines."""
    single = not stored.endswith(".jsonl")
    if isinstance(item, LoadFailure):
        if item.doc_id is None:
            return item
        return replace(item, doc_id=UPLOAD_PREFIX + stored + ("" if single else f"#{item.doc_id}"))
    doc_id = UPLOAD_PREFIX + stored + ("" if single else f"#{item.doc_id}")
    metadata = {**item.metadata, "upload": stored}
    if single:
        metadata["path"] = stored
    return replace(item, doc_id=doc_id, metadata=metadata)


def upload(ctx: UIContext, index: str | None, files: Sequence[str] | None) -> str:
    """Store uploaded files under the index's upload folder and index them in one run; a Markdown report.

    Uploaded documents live in their own id namespace (``upload:NAME.HASH.SUFFIX``): an upload never replaces
    a document indexed from elsewhere, and two uploads never replace each other."""
    if not index:
        return "Choose or type an index name first."
    if not ctx.store.exists(index):
        return f"There is no index {md(index)}: create it with nvrag index PATH --index NAME, then add files here."
    if not files:
        return "Choose files to upload (.txt, .md, .jsonl)."
    target = ctx.upload_root / safe_name(index)
    skipped: list[str] = []
    accepted: list[tuple[Path, str]] = []
    for file in files:
        path = Path(file)
        shown = md(path.name)
        if path.suffix.lower() not in UPLOAD_SUFFIXES:
            skipped.append(f"{shown}: type not accepted (use {', '.join(UPLOAD_SUFFIXES)})")
            continue
        try:
            data = _received(ctx, path)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            skipped.append(f"{shown}: {md(reason)}")
            continue
        name = stored_name(path.name, data)
        destination = target / name
        target.mkdir(parents=True, exist_ok=True)
        if not destination.exists():
            temporary = target / f".{name}.part"
            temporary.write_bytes(data)
            os.replace(temporary, destination)
        accepted.append((destination, name))
    report = IndexReport(index=index)
    if accepted:
        items = (_namespaced(item, name) for destination, name in accepted for item in load_corpus(destination))
        try:
            request = IndexRequest(index, ItemsSource(items, uploads=True))  # one run for every file
            with ctx._lock:  # one upload run at a time in this server; the index's write lock covers the rest
                report = ctx.run_index(request)
        except NvRagError as exc:
            return f"**Could not index the files:** {md(exc.for_api())}"
    lines = [
        f"**Indexed into {md(index)}:** {report.documents} documents, {report.chunks_added} chunks added, "
        f"{report.chunks_unchanged} unchanged."
    ]
    problems = skipped + [f"{md(Path(split_line(f.source)[0]).name)}: {md(f.reason)}" for f in report.failures]
    if problems:
        lines.append("\n**Skipped:**\n" + "\n".join(f"- {p}" for p in problems))
    return "\n".join(lines)
