"""Loaders: a directory of .txt/.md files, one such file, or a JSONL file → Documents.

A file or line that cannot be read becomes a LoadFailure with a one-line reason; loading goes on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nvrag.errors import InputError
from nvrag.schema import Document

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class LoadFailure:
    source: str
    reason: str


def load_corpus(path: Path) -> Iterator[Document | LoadFailure]:
    """Documents from a directory (recursive .txt/.md), a .txt/.md file, or a JSONL file, in a stable order."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        yield from _load_directory(path)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        yield from load_jsonl(path)
    elif path.suffix.lower() in TEXT_SUFFIXES:
        yield _load_text_file(path, path.name)
    else:
        raise InputError(
            f"{path}: unsupported file type {path.suffix or '(none)'}; "
            "give a directory, a .txt/.md file or a .jsonl file"
        )


def _load_directory(root: Path) -> Iterator[Document | LoadFailure]:
    for file in sorted(p for p in root.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES):
        if file.is_file():
            yield _load_text_file(file, file.relative_to(root).as_posix())


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ValueError("looks binary (NUL bytes); skipped")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start}); convert it to UTF-8") from exc


def _load_text_file(path: Path, doc_id: str) -> Document | LoadFailure:
    source = str(path.resolve())
    try:
        text = _read_text(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LoadFailure(source, reason)
    if not text.strip():
        return LoadFailure(source, "empty file; skipped")
    title = None
    if path.suffix.lower() in {".md", ".markdown"}:
        match = _MD_TITLE.search(text)
        title = match.group(1) if match else None
    metadata = {"path": doc_id, "format": path.suffix.lower().lstrip(".")}
    return Document(doc_id=doc_id, text=text, source=source, title=title, metadata=metadata)


def load_jsonl(path: Path) -> Iterator[Document | LoadFailure]:
    """One JSON object per line: ``id`` (or BEIR's ``_id``) and ``text`` required, ``title`` optional, other
    fields → metadata. A BEIR ``corpus.jsonl`` is read as is."""
    source = str(path.resolve())
    try:
        handle = path.open(encoding="utf-8-sig", errors="strict")
    except OSError as exc:
        yield LoadFailure(source, exc.strerror or str(exc))
        return
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield _jsonl_document(line, f"{source}:{number}")
        except UnicodeDecodeError as exc:
            yield LoadFailure(source, f"not valid UTF-8 after line {number}: {exc.reason}; rest of file skipped")


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
