"""Bounded reading: every byte a loader takes from a file goes through here.

Corpus files are hostile until read: a FIFO blocks a reader forever, a symlink can point at a device, a 385-byte
YAML block can expand to gigabytes, a .docx can inflate a hundredfold, JSON can nest deeper than the stack. Each
function here opens only regular files (never blocking, never following a symlink to a device) and stops at a
limit, raising ``RejectedInputError`` (a ValueError) with a one-line reason that the loader reports for that item alone.
The limits, with their defaults, are listed in docs/security.md.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

MAX_FILE_BYTES = 20 * 1024 * 1024  # one file as stored (a text file, a PDF, a .docx, a table)
MAX_LINE_BYTES = 4 * 1024 * 1024  # one JSONL line
MAX_DOCUMENT_CHARS = 1_000_000  # one document's text (its tokens' spans take about 100 bytes each in memory)
MAX_TITLE_CHARS = 1_000  # a document's title, embedded with each of its chunks: longer ones are cut
MAX_CHUNK_CHARS = 100_000  # one chunk's text (a "token" can span many characters: one unknown word)
MAX_JSON_DEPTH = 64  # nesting of JSON arrays and objects
MAX_FRONT_MATTER_BYTES = 64 * 1024  # Markdown front matter (YAML, no aliases)
MAX_UNZIPPED_BYTES = 100 * 1024 * 1024  # every member of a .docx together, decompressed
MAX_ZIP_MEMBERS = 2000
MAX_HTML_CHARS = 2_000_000  # one HTML page before parsing (its parse tree takes about 150 bytes per character)
MAX_TABLE_ROWS = 1_000_000  # rows of one table or .json file (Parquet: checked from its footer)
MAX_FAILURES_PER_FILE = 100  # failures listed one by one for one file; the rest are counted in one line
MAX_PDF_PAGES = 5000
PDF_STREAM_BYTES = 8 * 1024 * 1024  # one decompressed PDF stream (pypdf parses about 0.5 MB of content a second)
PDF_SECONDS = 20.0  # text extraction of one PDF: a hard deadline (pdf_process.py), and checked between pages


class RejectedInputError(ValueError):
    """An input that nvrag will not read, with the reason (reported as one failure, never fatal)."""


_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: Path) -> os.stat_result:
    """The file's status if it is (or a symlink resolves to) a regular file; RejectedInputError otherwise.

    ``os.stat`` never opens the file, so a FIFO or a device is refused without blocking or side effects.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise RejectedInputError(f"{_kind(info.st_mode)}, not a regular file; skipped")
    return info


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading. O_NONBLOCK keeps a file swapped for a FIFO after the check from
    blocking the open; the descriptor is checked again (fstat) so what is read is what was checked."""
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RejectedInputError("changed into something other than a regular file while being opened; skipped")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def human_bytes(n: int) -> str:
    """1.5 MB, 12 KB, 800 bytes."""
    if n >= 2**20:
        return f"{n / 2**20:.1f}".removesuffix(".0") + " MB"
    return f"{n // 1024} KB" if n >= 1024 else f"{n} bytes"


def too_large(size: int, limit: int, what: str = "one document") -> RejectedInputError:
    return RejectedInputError(
        f"{human_bytes(size)} is over the {human_bytes(limit)} limit for {what}; split it into smaller files"
    )


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The whole file, if it is regular and at most ``limit`` bytes (default MAX_FILE_BYTES; counted as read,
    not as stat claims)."""
    limit = MAX_FILE_BYTES if limit is None else limit
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise too_large(size, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise too_large(len(data), limit)  # the file grew after the check
    return data


def bounded_lines(handle: BinaryIO, limit: int | None = None) -> Iterator[bytes | None]:
    """The lines of ``handle``; None in place of a line longer than ``limit`` bytes (default MAX_LINE_BYTES;
    skipped without being held in memory: reading goes on at the next newline)."""
    limit = MAX_LINE_BYTES if limit is None else limit
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line  # at most ``limit`` bytes before its newline
            continue
        while True:  # drop the rest of the long line
            rest = handle.readline(1 << 20)
            if not rest or rest.endswith(b"\n"):
                break
        yield None


def check_text_size(text: str, limit: int | None = None) -> str:
    limit = MAX_DOCUMENT_CHARS if limit is None else limit
    if len(text) > limit:
        raise RejectedInputError(
            f"{len(text):,} characters of text is over the {limit:,} limit for one document; split it into "
            "smaller files"
        )
    return text


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests arrays and objects at most ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def loads_json(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with a nesting limit: deeper input is RejectedInputError, never a RecursionError."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise RejectedInputError(f"JSON nested deeper than {limit} levels; skipped") from None
    if not json_depth_ok(value, limit):
        raise RejectedInputError(f"JSON nested deeper than {limit} levels; skipped")
    return value


def load_yaml(text: str, limit: int = MAX_FRONT_MATTER_BYTES) -> Any:
    """YAML with the safe loader, refusing aliases (``*ref``: the expansion bombs) and oversized blocks."""
    import yaml

    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise RejectedInputError(f"front matter is over {limit // 1024} KiB; shorten it")

    class NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]  # one class per call keeps the loader stateless between files
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise RejectedInputError(
                    "front matter uses YAML aliases (*name), which nvrag does not expand; remove them"
                )
            return super().compose_node(parent, index)

    try:
        value = yaml.load(text, Loader=NoAliasLoader)  # a SafeLoader subclass
    except RecursionError:
        raise RejectedInputError(f"front matter nests deeper than {MAX_JSON_DEPTH} levels; skipped") from None
    if not json_depth_ok(value):
        raise RejectedInputError(f"front matter nests deeper than {MAX_JSON_DEPTH} levels; skipped")
    return value


def check_zip(data: bytes, limit: int = MAX_UNZIPPED_BYTES, members: int = MAX_ZIP_MEMBERS) -> None:
    """Refuse a zip container (.docx) whose members would inflate past ``limit`` bytes together.

    The sizes are the declared ones; zipfile never inflates a member past its declared size (a member that
    claims less than it holds fails its CRC check), so a reader that goes through zipfile stays inside them.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise RejectedInputError(f"not a readable .docx (zip container: {type(exc).__name__}); skipped") from None
    if len(infos) > members:
        raise RejectedInputError(f"the archive holds {len(infos)} members, over the limit of {members}; skipped")
    total = sum(info.file_size for info in infos)
    if total > limit:
        raise RejectedInputError(
            f"the archive inflates to {total / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit; skipped"
        )


# Byte-order marks, longest first: UTF-32 LE's BOM begins with UTF-16 LE's.
_BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
# Legacy encodings considered for text that is not UTF-8, most common first: among equally clean readings the
# earlier one wins, so short Western European text (which often reads cleanly as cp1250 too) is cp1252.
LEGACY_ENCODINGS = (
    "cp1252",
    "cp1250",
    "cp1251",
    "cp1253",
    "cp1254",
    "cp1257",
    "cp1256",
    "cp1255",
    "koi8_r",
    "gb18030",
    "big5",
    "shift_jis",
    "euc_jp",
    "euc_kr",
    "cp874",
)


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a text file's bytes.

    A BOM (UTF-8, UTF-16 or UTF-32, either byte order) decides exactly; else bytes that decode as UTF-8 are
    UTF-8; else charset-normalizer's cleanest reading among LEGACY_ENCODINGS, ties going to the more common
    encoding. RejectedInputError for binary data (NUL bytes in the first 8 KiB without a BOM) or undecodable bytes.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding), encoding
            except UnicodeDecodeError as exc:
                raise RejectedInputError(
                    f"starts with a {encoding.upper()} byte-order mark but is not valid {encoding.upper()} "
                    f"(byte {exc.start + len(bom)}); convert it to UTF-8"
                ) from None
    if b"\x00" in data[:8192]:
        raise RejectedInputError("looks binary (NUL bytes); skipped")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    from charset_normalizer import from_bytes

    sample = data[: 1 << 20]
    readings = list(from_bytes(sample, cp_isolation=list(LEGACY_ENCODINGS)))
    if not readings:
        raise RejectedInputError(
            f"not valid UTF-8 (byte {first_bad}) and no other text encoding fits; convert it to UTF-8"
        )
    cleanest = min(r.chaos for r in readings)
    for encoding in LEGACY_ENCODINGS:
        # charset-normalizer folds encodings that read the sample identically into one result, so each
        # preferred encoding is measured on its own
        reading = from_bytes(sample, cp_isolation=[encoding]).best()
        if reading is not None and reading.chaos <= cleanest:
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                continue  # clean on the first MiB, broken after it
    raise RejectedInputError(f"not valid UTF-8 (byte {first_bad}) and no other text encoding fits; convert it to UTF-8")
