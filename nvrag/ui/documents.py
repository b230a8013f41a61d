"""The page's Documents tab: an index's documents listed (filtered by origin and source), one deleted after a
confirmation. The same operations as `nvrag documents` and `nvrag delete`."""

from __future__ import annotations

from nvrag.errors import NvRagError
from nvrag.indexer import delete_documents, list_documents
from nvrag.ui.callbacks import UIContext
from nvrag.ui.render import md

MAX_LISTED = 1000  # rows the table shows; narrow with the filter to see others
ORIGINS = ("any", "path", "api", "upload")
COLUMNS = ["id", "origin", "source", "chunks", "updated"]


def document_rows(ctx: UIContext, index: str | None, origin: str = "any", contains: str = "") -> list[list[str]]:
    """The documents of ``index`` whose origin is ``origin`` (or any) and whose id or source contains
    ``contains`` (case-insensitive), at most MAX_LISTED of them."""
    if not index or not ctx.store.exists(index):
        return []
    needle = contains.strip().lower()
    rows: list[list[str]] = []
    for doc in list_documents(ctx.store, index):
        if origin not in ("any", doc.origin):
            continue
        if needle and needle not in doc.id.lower() and needle not in doc.source.lower():
            continue
        rows.append([doc.id, doc.origin, doc.source, str(doc.chunks), doc.updated or "-"])
        if len(rows) == MAX_LISTED:
            break
    return rows


def delete_document(ctx: UIContext, index: str | None, doc_id: str, confirmed: bool) -> str:
    """Delete one document (every chunk) once the user confirmed; a Markdown line saying what happened."""
    doc_id = doc_id.strip()
    if not index or not ctx.store.exists(index):
        return "Choose an index first."
    if not doc_id:
        return "Type the id of the document to delete (the table's first column)."
    if not confirmed:
        return "Tick the confirmation box to delete it: a deleted document is gone from the index."
    try:
        if ctx.delete_documents is not None:  # a server's: its searches see the deletion at once
            removed = ctx.delete_documents(index, [doc_id], None)
        else:
            removed = delete_documents(ctx.store, index, [doc_id])
    except NvRagError as exc:
        return f"**Not deleted:** {md(exc.for_api())}"
    if removed == 0:
        return f"Index {md(index)} has no document {md(doc_id)}."
    return f"**Deleted** {md(doc_id)} from {md(index)} ({removed} chunks)."
