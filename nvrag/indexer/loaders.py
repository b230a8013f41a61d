"""Loaders: a directory of .txt/.md files, one such file, or a JSONL file → Documents.

A file or line that cannot be read becomes a LoadFailure with a one-line reason; loading goes on.
"""

from __future__ import annotations

import json
import os
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


def count_items(path: Path) -> int | None:
    """How many items load_corpus(path) will yield (files, or non-empty JSONL lines), for progress bars."""
    if path.is_dir():
        return sum(1 for _ in _directory_files(path))
    if path.suffix.lower() in JSONL_SUFFIXES:
        try:
            with path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        except OSError:
            return None
    return 1


def _directory_files(root: Path) -> list[Path]:
    """Candidate files below root, sorted. Symlinked directories are not followed (no loops); symlinked files
    are, and a broken or looping one fails when it is read, with its reason."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        found.extend(Path(folder) / f for f in files if Path(f).suffix.lower() in TEXT_SUFFIXES)
    return sorted(found)


def _load_directory(root: Path) -> Iterator[Document | LoadFailure]:
    for file in _directory_files(root):
        yield _load_text_file(file, file.relative_to(root).as_posix())


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


def _read_text(path: Path) -> tuple[str, str]:
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise ValueError(
            f"{size / 2**20:.0f} MB is over the {MAX_DOCUMENT_BYTES // 2**20} MB limit for one document; "
            "split it into smaller files"
        )
    return decode_text(path.read_bytes())


def _load_text_file(path: Path, doc_id: str) -> Document | LoadFailure:
    source = str(path.absolute())  # not resolve(): a symlink loop must fail on read, with its reason
    try:
        text, encoding = _read_text(path)
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
    if encoding != "utf-8":
        metadata["encoding"] = encoding
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
