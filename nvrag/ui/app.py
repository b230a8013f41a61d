"""The Gradio layout, and the web server around it (one FastAPI app: Gradio plus a route for source files).

Gradio is imported here only, and only when the UI is built (the `ui` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nvrag.errors import NvRagError
from nvrag.indexer import reading
from nvrag.indexer.loaders import HTML_SUFFIXES, LoadUnit, load_unit, split_line
from nvrag.limits import MAX_QUERY_CHARS
from nvrag.retriever import MODES
from nvrag.schema import Document
from nvrag.ui import callbacks, documents
from nvrag.ui.callbacks import TASK_CHOICES, UIContext
from nvrag.ui.render import CSS

MAX_REQUEST_FILES = 10  # files of at most max_upload_bytes each in one request
MAX_QUEUED_EVENTS = 64  # searches, uploads, listings and deletes waiting for their turn, across the page's users


def build_ui(ctx: UIContext, index: str | None = None) -> Any:
    """The Blocks app: a Search tab and an Index tab, wired to the plain callbacks."""
    import gradio as gr

    indexes = callbacks.index_choices(ctx)
    selected = index if index in indexes else (indexes[0] if indexes else None)
    # what Gradio received is copied into the index's upload folder at once: its own copies go after an hour
    with gr.Blocks(title="nvrag search", delete_cache=(600, 3600)) as blocks:
        gr.Markdown("## nvrag search")
        with gr.Tab("Search"):
            with gr.Row():
                query = gr.Textbox(
                    label="Query",
                    placeholder="Ask something and press Enter",
                    scale=4,
                    elem_id="query",
                    max_length=MAX_QUERY_CHARS,
                )
                index_box = gr.Dropdown(
                    choices=indexes, value=selected, label="Index", allow_custom_value=False, scale=1, elem_id="index"
                )
            with gr.Row():
                task = gr.Dropdown(
                    choices=TASK_CHOICES, value=TASK_CHOICES[0], label="Task / instruction", elem_id="task"
                )
                instruction = gr.Textbox(
                    label="Custom instruction",
                    placeholder="used with 'Custom instruction'",
                    elem_id="instruction",
                    max_length=MAX_QUERY_CHARS,
                )
                k = gr.Slider(1, callbacks.MAX_K, value=10, step=1, label="k", elem_id="k")
                mode = gr.Radio(choices=list(MODES), value="dense", label="Mode", elem_id="mode")
            filters = gr.Textbox(
                label="Metadata filter",
                placeholder="e.g. lang = en and year >= 2020",
                info=callbacks.filter_fields(ctx, selected),
                elem_id="filters",
                max_length=MAX_QUERY_CHARS,
            )
            with gr.Row():
                rerank = gr.Checkbox(
                    label=f"Rerank with {ctx.reranker.name}" if ctx.reranker is not None else "Rerank",
                    value=False,
                    visible=ctx.reranker is not None,
                    elem_id="rerank",
                )
                search_button = gr.Button("Search", variant="primary", elem_id="search")
            results = gr.HTML(elem_id="results")
        with gr.Tab("Index"):
            info = gr.Markdown(callbacks.index_info(ctx, selected), elem_id="info")
            files = gr.File(
                file_count="multiple", file_types=list(callbacks.UPLOAD_SUFFIXES), label="Add files", elem_id="upload"
            )
            upload_button = gr.Button("Upload and index", elem_id="upload-button")
            report = gr.Markdown(elem_id="report")
        with gr.Tab("Documents"):
            with gr.Row():
                origin = gr.Dropdown(choices=list(documents.ORIGINS), value="any", label="Origin", elem_id="origin")
                contains = gr.Textbox(label="Id or source contains", elem_id="contains", max_length=1000)
                list_button = gr.Button("List", elem_id="list-documents")
            table = gr.Dataframe(
                headers=documents.COLUMNS, interactive=False, elem_id="documents", wrap=True, max_height=480
            )
            with gr.Row():
                doc_id = gr.Textbox(label="Document id to delete", elem_id="delete-id", max_length=1000)
                confirm = gr.Checkbox(label="Yes, delete it from the index", elem_id="delete-confirm")
                delete_button = gr.Button("Delete", variant="stop", elem_id="delete-document")
            deleted = gr.Markdown(elem_id="deleted")

        inputs = [index_box, query, task, instruction, k, mode, filters, rerank]

        def run_search(*values: Any) -> str:
            return callbacks.search(ctx, *values)

        def run_upload(index_name: str | None, paths: list[str] | None) -> tuple[str, str, Any]:
            text = callbacks.upload(ctx, index_name, paths)
            choices = callbacks.index_choices(ctx)
            return text, callbacks.index_info(ctx, index_name), gr.update(choices=choices, value=index_name)

        def refresh_indexes(current: str | None) -> tuple[Any, str, Any]:
            # on every page load: indexes created since the server started (by the CLI, say) appear
            choices = callbacks.index_choices(ctx)
            value = current if current in choices else (index if index in choices else next(iter(choices), None))
            fields = gr.update(info=callbacks.filter_fields(ctx, value))
            return gr.update(choices=choices, value=value), callbacks.index_info(ctx, value), fields

        def index_chosen(name: str | None) -> tuple[str, Any]:
            return callbacks.index_info(ctx, name), gr.update(info=callbacks.filter_fields(ctx, name))

        blocks.load(refresh_indexes, index_box, [index_box, info, filters])
        query.submit(run_search, inputs, results)
        search_button.click(run_search, inputs, results)
        index_box.change(index_chosen, index_box, [info, filters])
        upload_button.click(run_upload, [index_box, files], [report, info, index_box])

        def listed(name: str | None, kind: str, text: str) -> list[list[str]]:
            return documents.document_rows(ctx, name, kind, text or "")

        def run_delete(name: str | None, doc: str, sure: bool, kind: str, text: str) -> tuple[str, Any, bool]:
            said = documents.delete_document(ctx, name, doc or "", bool(sure))
            return said, documents.document_rows(ctx, name, kind, text or ""), False

        list_button.click(listed, [index_box, origin, contains], table)
        contains.submit(listed, [index_box, origin, contains], table)
        delete_button.click(run_delete, [index_box, doc_id, confirm, origin, contains], [deleted, table, confirm])
    # each listener runs one event at a time; past MAX_QUEUED_EVENTS waiting (all listeners together) a new one
    # is refused at once ("Queue is full") instead of waiting without end
    blocks.queue(max_size=MAX_QUEUED_EVENTS, default_concurrency_limit=1)
    return blocks


EXTRACTED_SUFFIXES = HTML_SUFFIXES | {".pdf", ".docx"}  # sources shown as their extracted text

SOURCE_HEADERS = {
    # an indexed file is shown as inert text: never sniffed into HTML, never run, never framed or fetched from
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def source_text(ctx: UIContext, index_name: str, chunk_id: str) -> str | None:
    """The text of the local file an indexed chunk came from, or None (no such chunk, not a local file, or a
    path that no longer resolves to the file that was indexed). Only paths recorded at index time are read;
    the loaders record the resolved path, so a path that now resolves elsewhere (a file swapped for a symlink,
    a directory moved) is refused, as is anything but a regular file."""
    try:
        found = ctx.store.open(index_name).get([chunk_id])
    except NvRagError:
        return None
    if not found:
        return None
    raw = found[0].source
    recorded = split_line(raw)[0] if not os.path.lexists(raw) else raw
    if not os.path.isabs(recorded) or os.path.realpath(recorded) != recorded:
        return None
    if Path(recorded).suffix.lower() in EXTRACTED_SUFFIXES:
        # a PDF, DOCX or HTML file is shown as the text nvrag extracted from it, not as its raw bytes
        unit = LoadUnit(recorded, found[0].doc_id)
        texts = [d.text for d in load_unit(unit) if isinstance(d, Document) and d.doc_id == found[0].doc_id]
        return texts[0] if texts else None
    try:
        data = reading.read_bytes(Path(recorded))
        return reading.decode_text(data)[0]
    except (OSError, ValueError):
        return None


def build_server(ctx: UIContext, index: str | None = None, auth: tuple[str, str] | None = None) -> Any:
    """A FastAPI app serving the UI at / and, without a login, indexed local source files at /source."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import PlainTextResponse

    server = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    limit = MAX_REQUEST_FILES * ctx.max_upload_bytes + 2**20

    @server.middleware("http")
    async def bounded_bodies(request: Any, call_next: Any) -> Any:
        # Gradio caps each uploaded file, not a request: a request names its size up front (browsers do) and
        # stays within MAX_REQUEST_FILES uploads, else it is refused before a byte of its body is read
        if request.method in ("POST", "PUT", "PATCH"):
            declared = request.headers.get("content-length")
            if declared is None and request.headers.get("transfer-encoding"):
                return PlainTextResponse("send a Content-Length", status_code=411)
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                return PlainTextResponse(f"request body over {limit} bytes", status_code=413)
        return await call_next(request)

    if auth is not None:
        ctx.source_url = None  # the source route is outside Gradio's login: do not offer it

    @server.get("/source/{index_name}/{chunk_id}")
    def source(index_name: str, chunk_id: str) -> PlainTextResponse:
        text = source_text(ctx, index_name, chunk_id) if ctx.source_url is not None else None
        if text is None:
            raise HTTPException(404, "no indexed local file for this chunk", headers=SOURCE_HEADERS)
        return PlainTextResponse(text, media_type="text/plain; charset=utf-8", headers=SOURCE_HEADERS)

    blocks = build_ui(ctx, index)
    app = gr.mount_gradio_app(
        server,
        blocks,
        path="",
        auth=auth,
        max_file_size=ctx.max_upload_bytes,
        css=CSS,
        footer_links=[],
        ssr_mode=False,
    )
    # Gradio checks a client-named file path against its upload folder only once the Blocks "have launched",
    # which mount_gradio_app never marks: without this, an event payload naming /etc/passwd (or /dev/zero) as
    # a FileData path is copied and indexed. Launched, only files that Gradio itself received are accepted.
    blocks.has_launched = True
    return app
