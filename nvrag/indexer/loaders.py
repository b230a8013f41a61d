"""Loaders: files and directories → Documents.

Text (.txt, .md with YAML front matter → metadata), HTML, PDF (page numbers kept), DOCX (the `docx` extra),
JSONL / BEIR corpus.jsonl, JSON, CSV, TSV and Parquet (id, text, title and metadata columns chosen with
TableColumns). A directory is read recursively. A file, line or row that cannot be read becomes a LoadFailure
with a one-line reason; loading goes on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from nvrag.errors import InputError
from nvrag.indexer.formats import (
    TableColumns,
    json_value,
    read_delimited,
    read_docx,
    read_html,
    read_json_records,
    read_parquet,
    read_pdf,
    record_document,
)
from nvrag.schema import Document

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".json"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | HTML_SUFFIXES | TABLE_SUFFIXES | {".pdf", ".docx"}
_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


@dataclass(frozen=True)
class LoadFailure:
    source: str
    reason: str


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


def load_corpus(path: Path, columns: TableColumns | None = None) -> Iterator[Document | LoadFailure]:
    """Documents from a file or a directory (recursive), in a stable order; see the module docstring."""
    for unit in plan_units(path):
        yield from load_unit(unit, columns)


def plan_units(path: Path, jsonl_block_lines: int | None = None) -> list[LoadUnit]:
    """The files under ``path`` as units, in load order; JSONL files are cut into blocks of
    ``jsonl_block_lines`` lines when it is given (this reads each JSONL file once to find the line offsets)."""
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{path}: no such file or directory")
    unreadable: list[tuple[Path, str]] = []
    if path.is_dir():
        files = [(file, file.relative_to(path).as_posix()) for file in _directory_files(path, unreadable)]
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
        with path.open("rb") as f:
            offset = 0
            for number, line in enumerate(f, start=1):
                if number > 1 and (number - 1) % block_lines == 0:
                    blocks[-1] = replace(blocks[-1], lines=block_lines)
                    blocks.append(LoadUnit(str(path), doc_id, offset, number, None))
                offset += len(line)
    except OSError:
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


def count_items(path: Path) -> int | None:
    """How many items load_corpus(path) will yield (files, or non-empty JSONL lines), for progress bars."""
    if path.is_dir():
        files = _directory_files(path)
        if any(f.suffix.lower() in TABLE_SUFFIXES | JSONL_SUFFIXES for f in files):
            return None  # files hold many documents each: no meaningful total
        return len(files)
    if path.suffix.lower() in JSONL_SUFFIXES:
        try:
            with path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        except OSError:
            return None
    return 1


def _directory_files(root: Path, unreadable: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Candidate files below root, sorted. Symlinked directories are not followed (no loops); symlinked files
    are, and a broken or looping one fails when it is read, with its reason. Directories that cannot be listed
    are added to ``unreadable`` with the reason (their files are not indexed)."""
    found: list[Path] = []

    def failed(exc: OSError) -> None:
        if unreadable is not None:
            unreadable.append((Path(exc.filename or root), exc.strerror or str(exc)))

    for folder, dirs, files in os.walk(root, onerror=failed, followlinks=False):
        dirs.sort()
        found.extend(Path(folder) / f for f in files if Path(f).suffix.lower() in SUPPORTED_SUFFIXES)
    return sorted(found)


def _load_file(path: Path, doc_id: str, columns: TableColumns) -> Iterator[Document | LoadFailure]:
    suffix = path.suffix.lower()
    source = str(path.absolute())  # not resolve(): a symlink loop must fail on read, with its reason
    try:
        if suffix in TEXT_SUFFIXES:
            yield _text_document(path, doc_id)
        elif suffix in HTML_SUFFIXES:
            yield read_html(path, _read_text(path)[0], doc_id)
        elif suffix == ".pdf":
            _check_size(path)
            yield read_pdf(path, doc_id)
        elif suffix == ".docx":
            _check_size(path)
            yield read_docx(path, doc_id)
        else:
            yield from _records(path, columns)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield LoadFailure(source, reason)


def _records(path: Path, columns: TableColumns) -> Iterator[Document | LoadFailure]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        _check_size(path)
        rows = read_parquet(path)
    elif suffix == ".json":
        rows = read_json_records(_read_text(path)[0])
    else:
        rows = read_delimited(path, _read_text(path)[0], "\t" if suffix == ".tsv" else ",")
    source = str(path.absolute())
    header = 0 if suffix in {".parquet", ".json"} else 1  # CSV/TSV: row numbers count the header line
    for number, row in enumerate(rows, start=1 + header):
        try:
            yield record_document(row, columns, f"{source}:{number}")
        except ValueError as exc:
            yield LoadFailure(f"{source}:{number}", str(exc))


MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (with or without BOM), UTF-16 with a BOM, else charset-normalizer's best guess.

    Raises ValueError for binary data (NUL bytes in the first 8 KiB without a UTF-16 BOM) or undecodable bytes.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    if b"\x00" in data[:8192]:
        raise ValueError("looks binary (NUL bytes); skipped")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 1 << 20]).best()
    if best is None or best.encoding is None:
        raise ValueError(f"not valid UTF-8 (byte {first_bad}) and no other text encoding fits; convert it to UTF-8")
    try:
        return data.decode(best.encoding), best.encoding
    except (UnicodeDecodeError, LookupError) as exc:
        raise ValueError(f"not valid UTF-8, and not {best.encoding} either; convert it to UTF-8") from exc


def _check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise ValueError(
            f"{size / 2**20:.0f} MB is over the {MAX_DOCUMENT_BYTES // 2**20} MB limit for one document; "
            "split it into smaller files"
        )


def _read_text(path: Path) -> tuple[str, str]:
    _check_size(path)
    return decode_text(path.read_bytes())


def _text_document(path: Path, doc_id: str) -> Document:
    text, encoding = _read_text(path)
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
        match = _MD_TITLE.search(text)
        title = str(title_value) if title_value else (match.group(1) if match else None)
    return Document(doc_id=doc_id, text=text, source=str(path.absolute()), title=title, metadata=metadata)


def _front_matter(block: str) -> dict[str, object]:
    import yaml

    try:
        data = yaml.safe_load(block)
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
        handle = path.open("rb")
        handle.seek(offset)
    except OSError as exc:
        yield LoadFailure(source, exc.strerror or str(exc))
        return
    with handle:
        for number, raw in enumerate(handle, start=first_line):
            if lines is not None and number >= first_line + lines:
                return
            where = f"{source}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield LoadFailure(where, f"not valid UTF-8 (byte {exc.start} of the line); line skipped")
                continue
            if line.strip():
                if custom:
                    yield _custom_jsonl_document(line, where, columns)  # type: ignore[arg-type]
                else:
                    yield _jsonl_document(line, where)


def _custom_jsonl_document(line: str, where: str, columns: TableColumns) -> Document | LoadFailure:
    try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("a line must be a JSON object; line skipped")
        return record_document(obj, columns, where)
    except json.JSONDecodeError as exc:
        return LoadFailure(where, f"malformed JSON ({exc.msg}); line skipped")
    except ValueError as exc:
        return LoadFailure(where, str(exc))


def _jsonl_document(line: str, where: str) -> Document | LoadFailure:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return LoadFailure(where, f"malformed JSON ({exc.msg}); line skipped")
    if not isinstance(obj, dict):
        return LoadFailure(where, "a line must be a JSON object with 'id' and 'text'; line skipped")
    doc_id = obj.pop("id") if "id" in obj else obj.pop("_id", None)
    text, title = obj.pop("text", None), obj.pop("title", None)
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or str(doc_id) == "":
        return LoadFailure(where, "missing or empty 'id' (a string or integer); line skipped")
    if not isinstance(text, str) or not text.strip():
        return LoadFailure(where, f"document {doc_id}: missing or empty 'text'; line skipped")
    if title is not None and not isinstance(title, str):
        title = str(title)
    return Document(doc_id=str(doc_id), text=text, source=where, title=title or None, metadata=obj)
