"""Loaders: files and directories → Documents.

Text (.txt, .md with YAML front matter → metadata), HTML, PDF (page numbers kept), DOCX (the `docx` extra),
JSONL / BEIR corpus.jsonl, JSON, CSV, TSV and Parquet (id, text, title and metadata columns chosen with
TableColumns). A directory is read recursively. A file, line or row that cannot be read becomes a LoadFailure
with a one-line reason; loading goes on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nvrag.errors import InputError
from nvrag.indexer import reading
from nvrag.indexer.formats import (
    TableColumns,
    json_value,
    read_delimited,
    read_docx,
    read_html,
    read_json_records,
    read_parquet,
    record_document,
    shown_id,
)
from nvrag.indexer.pdf_process import extract_pdf
from nvrag.indexer.reading import RejectedInputError, decode_text
from nvrag.indexer.walking import directory_files, walk
from nvrag.schema import Document

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".json"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | HTML_SUFFIXES | TABLE_SUFFIXES | {".pdf", ".docx"}
_MD_HEADING = re.compile(r"^#[ \t]", re.MULTILINE)  # where a level-1 ATX heading starts (no backtracking)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


UPLOAD_PREFIX = "upload:"  # document ids of UI uploads; reserved, so an upload never replaces another document
API_SOURCE_PREFIX = "api:"  # the source of a document added through the HTTP API: "api:ID"

# Who added a document (docs/security.md): each surface replaces and prunes only its own documents
ORIGIN_PATH, ORIGIN_API, ORIGIN_UPLOAD = "path", "api", "upload"
ORIGIN_WORDS = {
    ORIGIN_PATH: "from a file or by a program",
    ORIGIN_API: "through the HTTP API",
    ORIGIN_UPLOAD: "as an upload in the web page",
}


def document_origin(doc_id: str, source: str) -> str:
    """A stored document's origin, from what every chunk of it records: upload ids are reserved, API
    documents' source is "api:ID", everything else came from PATH (the CLI, Python, Ray)."""
    if doc_id.startswith(UPLOAD_PREFIX):
        return ORIGIN_UPLOAD
    return ORIGIN_API if source.startswith(API_SOURCE_PREFIX) else ORIGIN_PATH


def split_line(source: str) -> tuple[str, int | None]:
    """A source split into its file and line: "FILE:N" (a row or line of a file) → (FILE, N), else (source, None)."""
    head, _, tail = source.rpartition(":")
    return (head, int(tail)) if head and tail.isdigit() else (source, None)


@dataclass(frozen=True)
class LoadFailure:
    source: str
    reason: str
    doc_id: str | None = None  # the document that failed, when known (--prune keeps it)


@dataclass(frozen=True)
class LoadUnit:
    """One piece of loading work: a file, or a block of lines of a JSONL file (``offset`` is the byte where
    line ``first_line`` starts; ``lines`` None reads to the end). Units are independent, so engines can load
    them in parallel; loading every unit of plan_units(path) in order yields what load_corpus(path) does."""

    path: str
    doc_id: str  # the document id of a one-document file (its path relative to the indexed directory)
    offset: int = 0
    first_line: int = 1
    lines: int | None = None
    failure: str | None = None  # a directory that could not be listed: loading it reports this reason


def load_corpus(
    path: Path, columns: TableColumns | None = None, exclude: tuple[Path, ...] = ()
) -> Iterator[Document | LoadFailure]:
    """Documents from a file or a directory (recursive, leaving out the directories in ``exclude``), in a
    stable order; see the module docstring."""
    for unit in plan_units(path, exclude=exclude):
        yield from load_unit(unit, columns)


def plan_units(path: Path, jsonl_block_lines: int | None = None, exclude: tuple[Path, ...] = ()) -> list[LoadUnit]:
    """The files under ``path`` (but not under the directories in ``exclude``) as units, in load order; JSONL
    files are cut into blocks of ``jsonl_block_lines`` lines when it is given (this reads each JSONL file once
    to find the line offsets)."""
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{path}: no such file or directory")
    unreadable: list[tuple[Path, str]] = []
    if path.is_dir():
        files = [
            (file, file.relative_to(path).as_posix())
            for file in directory_files(path, SUPPORTED_SUFFIXES, unreadable, exclude)
        ]
    elif path.suffix.lower() in SUPPORTED_SUFFIXES:
        files = [(path, path.name)]
    else:
        known = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'}; nvrag reads {known}")
    units: list[LoadUnit] = []
    for file, doc_id in files:
        if jsonl_block_lines is not None and file.suffix.lower() in JSONL_SUFFIXES:
            units.extend(_jsonl_blocks(file, doc_id, jsonl_block_lines))
        else:
            units.append(LoadUnit(str(file), doc_id))
    for folder, reason in unreadable:
        units.append(LoadUnit(str(folder.absolute()), "", failure=f"{reason}; directory not read"))
    return units


def _jsonl_blocks(path: Path, doc_id: str, block_lines: int) -> list[LoadUnit]:
    blocks = [LoadUnit(str(path), doc_id, 0, 1, None)]
    try:
        with reading.open_regular(path) as f:
            offset = 0
            for number, _ in enumerate(reading.bounded_lines(f), start=1):
                if number > 1 and (number - 1) % block_lines == 0:
                    blocks[-1] = replace(blocks[-1], lines=block_lines)
                    blocks.append(LoadUnit(str(path), doc_id, offset, number, None))
                offset = f.tell()
    except (OSError, ValueError):
        return [LoadUnit(str(path), doc_id)]  # one unit: reading it reports why it cannot be read
    return blocks


def load_unit(unit: LoadUnit, columns: TableColumns | None = None) -> Iterator[Document | LoadFailure]:
    """The documents (and failures) of one unit of plan_units."""
    columns = columns or TableColumns()
    path = Path(unit.path)
    if unit.failure is not None:
        yield LoadFailure(unit.path, unit.failure)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        yield from load_jsonl(path, columns, offset=unit.offset, first_line=unit.first_line, lines=unit.lines)
    else:
        yield from _load_file(path, unit.doc_id, columns)


def count_items(path: Path, exclude: tuple[Path, ...] = ()) -> int | None:
    """How many items load_corpus(path, exclude=exclude) will yield (files, or non-empty JSONL lines), for
    progress bars."""
    if path.is_dir():
        files = directory_files(path, SUPPORTED_SUFFIXES, exclude=exclude)
        if any(f.suffix.lower() in TABLE_SUFFIXES | JSONL_SUFFIXES for f in files):
            return None  # files hold many documents each: no meaningful total
        return len(files)
    if path.suffix.lower() in JSONL_SUFFIXES:
        try:
            with reading.open_regular(path) as f:
                return sum(1 for line in reading.bounded_lines(f) if line is None or line.strip())
        except (OSError, ValueError):
            return None
    return 1


def unsupported_files(path: Path, exclude: tuple[Path, ...] = ()) -> dict[str, int]:
    """Files under a directory (not under those in ``exclude``) that nvrag does not read, counted by suffix
    (lower case; "(none)" for files without one): what a run's report names as skipped. Empty for a single
    file (refused up front)."""
    counts: dict[str, int] = {}
    if not path.is_dir():
        return counts
    for _, _, files in walk(path, exclude):
        for name in files:
            suffix = Path(name).suffix.lower()
            if suffix not in SUPPORTED_SUFFIXES:
                key = suffix or "(none)"
                counts[key] = counts.get(key, 0) + 1
    return counts


def _load_file(path: Path, doc_id: str, columns: TableColumns) -> Iterator[Document | LoadFailure]:
    suffix = path.suffix.lower()
    given = str(path.absolute())
    try:
        data = reading.read_bytes(path)
        # what was read, symlinks resolved: the source route serves this path only while it still resolves here
        source = os.path.realpath(path)
        if suffix in TEXT_SUFFIXES:
            yield _text_document(path, doc_id, data, source)
        elif suffix in HTML_SUFFIXES:
            yield _checked(read_html(decode_text(data)[0], doc_id, source))
        elif suffix == ".pdf":
            yield _checked(extract_pdf(data, doc_id, source))  # read_pdf in a child, with a hard deadline
        elif suffix == ".docx":
            reading.check_zip(data)
            yield _checked(read_docx(data, doc_id, source))
        else:
            yield from _records(path, data, columns)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield LoadFailure(given, reason, doc_id if suffix not in TABLE_SUFFIXES else None)
    except Exception as exc:  # a parser's own failure on hostile bytes: this file fails, the run goes on
        yield LoadFailure(given, _unexpected(exc), doc_id if suffix not in TABLE_SUFFIXES else None)


def _unexpected(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to read; skipped"
    if isinstance(exc, MemoryError):
        return "too large to read in memory; skipped"
    return f"could not be read ({type(exc).__name__}); skipped"


def _checked(doc: Document) -> Document:
    reading.check_text_size(doc.text)
    return doc


def _records(path: Path, data: bytes, columns: TableColumns) -> Iterator[Document | LoadFailure]:
    suffix = path.suffix.lower()
    source = os.path.realpath(path)
    if suffix == ".parquet":
        rows: Iterator[Any] = read_parquet(data)
    elif suffix == ".json":
        rows = read_json_records(decode_text(data)[0])
    else:
        rows = read_delimited(decode_text(data)[0], "\t" if suffix == ".tsv" else ",")
    header = 0 if suffix in {".parquet", ".json"} else 1  # CSV/TSV: row numbers count the header line
    for number, row in enumerate(rows, start=1 + header):
        if number - header > reading.MAX_TABLE_ROWS:
            yield LoadFailure(
                source, f"more than {reading.MAX_TABLE_ROWS:,} rows; the rest of the file was not read (split it)"
            )
            return
        if not isinstance(row, dict):
            yield LoadFailure(f"{source}:{number}", "an item of a .json file must be a JSON object; skipped")
            continue
        try:
            yield _checked(record_document(row, columns, f"{source}:{number}"))
        except ValueError as exc:
            yield LoadFailure(f"{source}:{number}", str(exc), _row_id(row, columns))


def _row_id(row: object, columns: TableColumns) -> str | None:
    if not isinstance(row, dict):
        return None
    value = row.get(columns.id, row.get("_id") if columns.id == "id" else None)
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def _text_document(path: Path, doc_id: str, data: bytes, source: str) -> Document:
    text, encoding = decode_text(data)
    if not text.strip():
        raise ValueError("empty file; skipped")
    metadata: dict[str, object] = {"path": doc_id, "format": path.suffix.lower().lstrip(".")}
    if encoding != "utf-8":
        metadata["encoding"] = encoding
    title = None
    if path.suffix.lower() in {".md", ".markdown"}:
        front = _FRONT_MATTER.match(text)
        if front is not None:
            metadata.update(_front_matter(front.group(1)))
            text = text[front.end() :]
            if not text.strip():
                raise ValueError("only front matter, no text; skipped")
        title_value = metadata.pop("title", None)
        title = str(title_value) if title_value else _markdown_title(text)
    reading.check_text_size(text)
    return Document(doc_id=doc_id, text=text, source=source, title=title, metadata=metadata)


def _markdown_title(text: str) -> str | None:
    """The text of the first level-1 heading (``# Title``, closing hashes dropped), found in linear time: a
    regular expression with nested optional whitespace took seconds per line on hostile headings."""
    for match in _MD_HEADING.finditer(text):
        end = text.find("\n", match.end())
        title = text[match.end() : end if end >= 0 else len(text)].strip().rstrip("#").strip()
        if title:
            return title
    return None


def _front_matter(block: str) -> dict[str, object]:
    import yaml

    try:
        data = reading.load_yaml(block)
    except yaml.YAMLError as exc:
        raise ValueError(f"front matter is not valid YAML ({str(exc).splitlines()[0]}); fix or remove it") from exc
    if not isinstance(data, dict):
        return {}
    return {str(k): json_value(v) for k, v in data.items()}


def load_jsonl(
    path: Path,
    columns: TableColumns | None = None,
    *,
    offset: int = 0,
    first_line: int = 1,
    lines: int | None = None,
) -> Iterator[Document | LoadFailure]:
    """One JSON object per line: ``id`` (or BEIR's ``_id``) and ``text`` required, ``title`` optional, other
    fields → metadata. A BEIR ``corpus.jsonl`` is read as is. Other column names: ``columns``. A line that is
    not UTF-8 or not a valid object is reported and skipped. ``offset``, ``first_line`` and ``lines`` read a
    block of the file (see LoadUnit)."""
    source = str(path.absolute())
    custom = columns is not None and columns != TableColumns()
    try:
        handle = reading.open_regular(path)
        source = os.path.realpath(path)
        handle.seek(offset)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield LoadFailure(source, reason)
        return
    with handle:
        for number, raw in enumerate(reading.bounded_lines(handle), start=first_line):
            if lines is not None and number >= first_line + lines:
                return
            where = f"{source}:{number}"
            if raw is None:
                limit = reading.MAX_LINE_BYTES // 2**20
                yield LoadFailure(where, f"line longer than {limit} MB; line skipped (split the document)")
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield LoadFailure(where, f"not valid UTF-8 (byte {exc.start} of the line); line skipped")
                continue
            if line.strip():
                try:
                    yield _jsonl_line(line, where, columns if custom else None)
                except Exception as exc:  # never one line's problem for the whole file
                    yield LoadFailure(where, _unexpected(exc))


def _jsonl_line(line: str, where: str, columns: TableColumns | None) -> Document | LoadFailure:
    try:
        obj = reading.loads_json(line)
    except RejectedInputError as exc:
        return LoadFailure(where, f"{exc}".replace("skipped", "line skipped"))
    except ValueError as exc:  # json.JSONDecodeError
        return LoadFailure(where, f"malformed JSON ({getattr(exc, 'msg', exc)}); line skipped")
    if columns is not None:
        if not isinstance(obj, dict):
            return LoadFailure(where, "a line must be a JSON object; line skipped")
        try:
            return _checked(record_document(obj, columns, where))
        except ValueError as exc:
            return LoadFailure(where, str(exc), _row_id(obj, columns))
    return _jsonl_document(obj, where)


def _jsonl_document(obj: object, where: str) -> Document | LoadFailure:
    if not isinstance(obj, dict):
        return LoadFailure(where, "a line must be a JSON object with 'id' and 'text'; line skipped")
    doc_id = obj.pop("id") if "id" in obj else obj.pop("_id", None)
    text, title = obj.pop("text", None), obj.pop("title", None)
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or str(doc_id) == "":
        return LoadFailure(where, "missing or empty 'id' (a string or integer); line skipped")
    if not isinstance(text, str) or not text.strip():
        return LoadFailure(where, f"document {shown_id(doc_id)}: missing or empty 'text'; line skipped", str(doc_id))
    if len(text) > reading.MAX_DOCUMENT_CHARS:
        return LoadFailure(
            where,
            f"document {shown_id(doc_id)}: {len(text):,} characters of text is over the {reading.MAX_DOCUMENT_CHARS:,} "
            "limit; line skipped",
            str(doc_id),
        )
    if title is not None and not isinstance(title, str):
        title = str(title)
    return Document(doc_id=str(doc_id), text=text, source=where, title=title or None, metadata=obj)
