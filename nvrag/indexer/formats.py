"""Readers for rich formats: HTML, PDF, DOCX, JSON arrays and tables (CSV, TSV, Parquet).

Each takes bytes or text already read within the limits of nvrag.indexer.reading (never a path: nothing here
opens a file) and returns Documents, or raises ValueError with a one-line reason that the loader turns into a
LoadFailure. Heavy libraries are imported inside the reader that needs them.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nvrag.indexer import reading
from nvrag.schema import Document

_DROP_TAGS = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg")
_BLOCK_TAGS = ("p", "div", "section", "article", "li", "pre", "blockquote", "table", "tr", "br", "main")


@dataclass(frozen=True)
class TableColumns:
    """Which columns of a CSV/TSV/Parquet file (or JSON object) hold the id, text and title.

    ``metadata`` None keeps every other column as metadata; a tuple keeps only those.
    """

    id: str = "id"
    text: str = "text"
    title: str = "title"
    metadata: tuple[str, ...] | None = None


def read_html(text: str, doc_id: str, source: str) -> Document:
    """Main text and title of an HTML page; scripts, styles, navigation, headers and footers dropped."""
    from bs4 import BeautifulSoup

    if len(text) > reading.MAX_HTML_CHARS:
        raise reading.RejectedInputError(
            f"{len(text):,} characters of HTML is over the {reading.MAX_HTML_CHARS:,} limit for one page; skipped"
        )

    # lxml, not html.parser: Python's parser is quadratic on malformed runs such as "<a<a<a..." (2 M characters
    # of it would take minutes); libxml2's is linear
    soup = BeautifulSoup(text, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    body = soup.find("main") or soup.find("article") or soup.body or soup
    lines: list[str] = []
    blocks = body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", *_BLOCK_TAGS])
    # Blocks that hold another block: each block marks its ancestors, stopping at one already marked, so the
    # marking is linear even for a page nested 100,000 deep (a find() per element would be quadratic).
    holders: set[int] = set()
    for element in blocks:
        parent = element.parent
        while parent is not None and id(parent) not in holders:
            holders.add(id(parent))
            parent = parent.parent
    for element in blocks:
        if id(element) in holders:
            continue  # only leaf blocks: their text is not repeated by a parent
        line = " ".join(element.get_text(" ", strip=True).split())
        if line:
            level = element.name[1] if element.name in {"h1", "h2", "h3", "h4", "h5", "h6"} else ""
            lines.append(("#" * int(level) + " " + line) if level else line)
    if not lines:
        loose = " ".join(body.get_text(" ", strip=True).split())
        lines = [loose] if loose else []
    content = "\n\n".join(lines)
    if not content.strip():
        raise ValueError("no text in the HTML page; skipped")
    return Document(
        doc_id=doc_id,
        text=content,
        source=source,
        title=title or None,
        metadata={"path": doc_id, "format": "html"},
    )


def read_pdf(data: bytes, doc_id: str, source: str) -> Document:
    """Text of every page, pages separated by a blank line; page_starts lets chunks know their page.

    Bounded: at most MAX_PDF_PAGES pages, PDF_STREAM_BYTES per decompressed stream (pypdf's own limits),
    PDF_SECONDS of extraction (checked between pages: one page can run for hours, so loaders call this in a
    child process with a hard deadline, pdf_process.py) and MAX_DOCUMENT_CHARS of text."""
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    limits = _pdf_limits()
    deadline = time.monotonic() + reading.PDF_SECONDS
    try:
        with limits:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise reading.RejectedInputError("encrypted PDF (needs a password); skipped")
            count = len(reader.pages)
            if count > reading.MAX_PDF_PAGES:
                raise reading.RejectedInputError(f"{count} pages, over the limit of {reading.MAX_PDF_PAGES}; split it")
            pages: list[str] = []
            size = 0
            for page in reader.pages:
                contents = page.get_contents()
                if contents is not None:
                    contents.get_data()  # decoded once, within the limits (extract_text would hide a limit hit)
                pages.append(page.extract_text() or "")
                size += len(pages[-1])
                if size > reading.MAX_DOCUMENT_CHARS:
                    reading.check_text_size("x" * size)  # raises with the limit in the message
                if time.monotonic() > deadline:
                    raise reading.RejectedInputError(
                        f"text extraction took over {reading.PDF_SECONDS:.0f} s (at page {len(pages)}); skipped"
                    )
            title = reader.metadata.title if reader.metadata and reader.metadata.title else None
    except reading.RejectedInputError:
        raise
    except LimitReachedError:
        raise reading.RejectedInputError(
            f"a PDF stream inflates past {reading.human_bytes(reading.PDF_STREAM_BYTES)}, the limit; skipped"
        ) from None
    except (PdfReadError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a readable PDF ({type(exc).__name__}: {str(exc)[:80]}); skipped") from exc
    except Exception as exc:  # pypdf raises assorted errors on damaged files (LimitReachedError among them)
        raise ValueError(f"not a readable PDF ({type(exc).__name__}); skipped") from exc
    text, starts = "", []
    for page_text in pages:
        starts.append(len(text))
        text += page_text.strip() + "\n\n"
    if not text.strip():
        raise ValueError("the PDF has no extractable text (scanned images need OCR); skipped")
    return Document(
        doc_id=doc_id,
        text=text.rstrip(),
        source=source,
        title=str(title) if title else None,
        metadata={"path": doc_id, "format": "pdf", "pages": len(pages)},
        page_starts=tuple(starts),
    )


def _pdf_limits() -> Any:
    """pypdf's decompression limits lowered to PDF_STREAM_BYTES for this read (pypdf 7's Configuration)."""
    import contextlib

    try:
        from pypdf._configuration import apply_configuration
    except ImportError:  # an older pypdf: its module-level defaults apply
        return contextlib.nullcontext()
    cap = reading.PDF_STREAM_BYTES
    return apply_configuration(
        zlib_maximum_output_length=cap,
        lzw_maximum_output_length=cap,
        run_length_maximum_output_length=cap,
        jbig2_maximum_output_length=cap,
        brotli_maximum_output_length=cap,
        array_based_stream_maximum_output_length=cap,
        maximum_declared_stream_length=cap,
        image_maximum_buffer_size=cap,
    )


def read_docx(data: bytes, doc_id: str, source: str) -> Document:
    """Paragraph text of a Word document (the `docx` extra: python-docx). The caller has checked the zip's
    inflated size (reading.check_zip); python-docx parses its XML without resolving entities."""
    try:
        import docx
    except ImportError:
        raise ValueError("reading .docx needs the docx extra: pip install 'nvrag[docx]'; skipped") from None
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises zip, XML and key errors on damaged files
        raise ValueError(f"not a readable .docx ({type(exc).__name__}); skipped") from exc
    paragraphs = []
    for p in document.paragraphs:
        line = p.text.strip()
        if line:
            style = (p.style.name or "").lower() if p.style is not None else ""
            level = style.removeprefix("heading ").strip() if style.startswith("heading") else ""
            paragraphs.append(("#" * int(level) + " " + line) if level.isdigit() else line)
    if not paragraphs:
        raise ValueError("no text in the document; skipped")
    title = document.core_properties.title or None
    return Document(
        doc_id=doc_id,
        text="\n\n".join(paragraphs),
        source=source,
        title=title,
        metadata={"path": doc_id, "format": "docx"},
    )


ID_SHOWN_CHARS = 80


def shown_id(doc_id: object) -> str:
    """A document id as a message names it: as it is when printable and short, else escaped and cut (a newline,
    an escape sequence or a megabyte of id in a file still makes one short line)."""
    text = str(doc_id)
    if text.isprintable() and len(text) <= ID_SHOWN_CHARS:
        return text
    return repr(text[:ID_SHOWN_CHARS]) + ("..." if len(text) > ID_SHOWN_CHARS else "")


def record_document(row: dict[str, Any], columns: TableColumns, where: str) -> Document:
    """One table row or JSON object as a Document; raises ValueError naming what is missing."""
    doc_id = row.get(columns.id)
    if doc_id is None and columns.id == "id":
        doc_id = row.get("_id")
    text = row.get(columns.text)
    if doc_id is None or str(doc_id) == "" or isinstance(doc_id, bool):
        raise ValueError(f"missing or empty id column {columns.id!r}; row skipped")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"document {shown_id(doc_id)}: missing or empty text column {columns.text!r}; row skipped")
    title = row.get(columns.title)
    taken = {columns.id, columns.text, columns.title, "_id"}
    keys = columns.metadata if columns.metadata is not None else [k for k in row if k not in taken]
    metadata = {k: json_value(row.get(k)) for k in keys if k in row}
    return Document(
        doc_id=str(doc_id),
        text=text,
        source=where,
        title=str(title) if title not in (None, "") else None,
        metadata=metadata,
    )


def json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)  # dates, decimals, ...: their text


def read_delimited(text: str, delimiter: str) -> Iterator[dict[str, Any]]:
    """The rows of a CSV/TSV text, one at a time (a table of millions of tiny rows never sits in memory)."""
    try:
        for number, row in enumerate(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter), start=2):
            if None in row:
                raise ValueError(f"row {number} has more fields than the header; check the delimiter")
            yield row
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte, ...
        raise ValueError(f"not a readable table ({exc}); skipped") from None


def read_parquet(data: bytes) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file, a batch at a time, after its footer's row count and sizes are checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        rows_in = parquet.metadata.num_rows
        if rows_in > reading.MAX_TABLE_ROWS:
            raise reading.RejectedInputError(
                f"{rows_in:,} rows, over the limit of {reading.MAX_TABLE_ROWS:,}; split it"
            )
        if parquet.metadata.serialized_size > reading.MAX_FILE_BYTES or _parquet_inflated(parquet) > (
            reading.MAX_UNZIPPED_BYTES
        ):
            raise reading.RejectedInputError("the Parquet file inflates past the size limit; split it")
        batches = parquet.iter_batches(batch_size=1024)
        for batch in batches:
            rows: list[dict[str, Any]] = batch.to_pylist()
            yield from rows
    except reading.RejectedInputError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError subclasses on damaged files
        raise ValueError(f"not a readable Parquet file ({type(exc).__name__}); skipped") from exc


def _parquet_inflated(parquet: Any) -> int:
    """The bytes a Parquet file's column chunks take uncompressed, as its metadata declares them."""
    meta = parquet.metadata
    return sum(
        meta.row_group(g).column(c).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    )


def read_json_records(text: str) -> Iterator[Any]:
    """The records of a .json file: the items of a top-level array one at a time (a 20 MB array of empty
    objects parsed whole took 1.3 GiB), or the one top-level value; each nested at most MAX_JSON_DEPTH deep."""
    import json

    decoder = json.JSONDecoder()
    at = _skip_space(text, 0)
    try:
        if not text.startswith("[", at):
            value, end = decoder.raw_decode(text, at)
            if _skip_space(text, end) != len(text):
                raise ValueError("malformed JSON (extra data after the value); skipped")
            yield _within_depth(value)
            return
        at = _skip_space(text, at + 1)
        if text.startswith("]", at):
            return
        while True:
            value, at = decoder.raw_decode(text, at)
            yield _within_depth(value)
            at = _skip_space(text, at)
            if text.startswith("]", at):
                if _skip_space(text, at + 1) != len(text):
                    raise ValueError("malformed JSON (extra data after the array); skipped")
                return
            if not text.startswith(",", at):
                raise ValueError(f"malformed JSON (expected ',' or ']' at character {at}); skipped")
            at = _skip_space(text, at + 1)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON ({exc.msg}, line {exc.lineno}); skipped") from None
    except RecursionError:
        raise reading.RejectedInputError(f"JSON nested deeper than {reading.MAX_JSON_DEPTH} levels; skipped") from None


_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _within_depth(value: Any) -> Any:
    if not reading.json_depth_ok(value):
        raise reading.RejectedInputError(f"JSON nested deeper than {reading.MAX_JSON_DEPTH} levels; skipped")
    return value
