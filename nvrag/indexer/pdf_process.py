"""PDF text extraction in a child process with a hard deadline and a memory cap.

pypdf's text extraction cannot be bounded from inside: a page may draw one form XObject any number of times,
and each drawing runs the form's content again, so a PDF of a few KB can keep a CPU busy for hours (measured:
a 1,156-byte file, 83 s, stopped only by the text-size limit; with empty strings nothing stops it). The checks in
``formats.read_pdf`` run between pages, so they never see such a page end. Here ``read_pdf`` runs in a
long-lived child process (one per parent, started at the first PDF, reused): the parent waits at most
``reading.PDF_SECONDS`` for each answer and kills the child when that passes (the next PDF starts a new one).
The child also caps its own address space (``CHILD_MEMORY_BYTES``), so a reader that would swallow the
machine's memory fails with a MemoryError there instead.

The protocol is plain bytes on the child's stdin and stdout: a JSON header line, then the PDF's bytes; the
answer is one JSON line (the Document's fields, or the error's one-line reason). The child parses hostile bytes,
so nothing from it is unpickled: the parent reads JSON and checks its shape.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from nvrag.indexer import reading
from nvrag.schema import Document

CHILD_MEMORY_BYTES = 2 * 1024**3  # the child's address space: Python, pypdf and one PDF's streams fit well within
START_SECONDS = 60.0  # a guard for the child's start (imports), apart from each PDF's deadline
CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from nvrag.indexer.pdf_process import serve; serve()"


class PdfWorker:
    """One child process reading PDFs one at a time (callers from several threads take turns)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None

    def extract(self, data: bytes, doc_id: str, source: str, seconds: float | None = None) -> Document:
        """``formats.read_pdf`` in the child, within ``seconds`` (default ``reading.PDF_SECONDS``); raises
        RejectedInputError or ValueError with a one-line reason, as read_pdf does."""
        limit = reading.PDF_SECONDS if seconds is None else seconds
        header = {"doc_id": doc_id, "source": source, "seconds": limit, "size": len(data)}
        with self._lock:
            child = self._running()
            assert child.stdin is not None and child.stdout is not None
            try:
                child.stdin.write(json.dumps(header).encode("utf-8") + b"\n" + data)
                child.stdin.flush()
                line = _read_line(child.stdout, time.monotonic() + limit)
            except (OSError, ValueError):
                line = None
            if line is None:
                code = self._stop()
                if code is None:  # still running at the deadline: killed
                    raise reading.RejectedInputError(f"text extraction took over {limit:.0f} s; skipped") from None
                raise ValueError(f"the PDF reader stopped (exit code {code}); skipped") from None
        return _answer(line, doc_id, source)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def disown(self) -> None:
        """In a forked copy of the process that started the child: let go of it without a word to it (it is
        the parent's), closing this copy's ends of its pipes."""
        child, self._child = self._child, None
        if child is not None:
            _close_pipes(child)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(Path(__file__).resolve().parents[2])],  # where nvrag is imported from
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert child.stdout is not None
        if _read_line(child.stdout, time.monotonic() + START_SECONDS) != b"ready\n":
            child.kill()
            child.wait()
            raise ValueError("the PDF reader process did not start; skipped")
        self._child = child
        return child

    def _stop(self) -> int | None:
        """Kill the child (if any) and reap it; its exit code as it was before the kill (None: it was running)."""
        child, self._child = self._child, None
        if child is None:
            return None
        code = child.poll()
        if code is None:
            child.kill()
        child.wait()
        _close_pipes(child)
        return code


def _close_pipes(child: subprocess.Popen[bytes]) -> None:
    """This process's ends of the child's stdin and stdout."""
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """One line from the child by ``deadline``, else None (also at end of file)."""
    fd = stream.fileno()
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return None
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)


def _answer(line: bytes, doc_id: str, source: str) -> Document:
    """The child's answer as a Document, or its error raised; anything malformed is the reader's failure."""
    error: tuple[str, bool] | None = None
    try:
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise TypeError("not an object")
        if "error" in answer:
            error = str(answer["error"]).replace("\n", " "), bool(answer.get("rejected"))
        else:
            text, title, metadata = answer["text"], answer["title"], answer["metadata"]
            if not isinstance(text, str) or not isinstance(metadata, dict):
                raise TypeError("text or metadata")
            doc = Document(
                doc_id=doc_id,
                text=text,
                source=source,
                title=None if title is None else str(title),
                metadata=metadata,
                page_starts=tuple(int(s) for s in answer["page_starts"]),
            )
    except (KeyError, TypeError, ValueError):  # (a JSONDecodeError is a ValueError)
        raise ValueError("the PDF reader gave a malformed answer; skipped") from None
    if error is not None:
        reason, rejected = error
        raise reading.RejectedInputError(reason) if rejected else ValueError(reason)
    return doc


_WORKER: PdfWorker | None = None
_WORKER_LOCK = threading.Lock()


def _forked() -> None:
    """In a forked child process: its parent's reader stays the parent's; this process starts its own."""
    global _WORKER, _WORKER_LOCK
    if _WORKER is not None:
        _WORKER.disown()
    _WORKER, _WORKER_LOCK = None, threading.Lock()  # (another thread may have held the lock at the fork)


os.register_at_fork(after_in_child=_forked)


def extract_pdf(data: bytes, doc_id: str, source: str) -> Document:
    """``formats.read_pdf`` with a hard deadline: in this process's PDF child (started at the first call)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = PdfWorker()
            atexit.register(_WORKER.close)
        worker = _WORKER
    return worker.extract(data, doc_id, source)


def serve() -> None:
    """The child: cap memory, say ready, then answer each request on stdin until it closes. It ends itself
    when its parent is gone (a killed parent would otherwise leave it extracting a hostile page for hours)."""
    import resource

    from nvrag.indexer.formats import read_pdf

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    read_in = sys.stdin.buffer
    write_out = os.fdopen(os.dup(1), "wb")  # the answers; anything a library prints goes to stderr instead
    os.dup2(2, 1)
    write_out.write(b"ready\n")
    write_out.flush()
    while header := read_in.readline():
        request = json.loads(header)
        data = read_in.read(int(request["size"]))
        answer: dict[str, Any]
        try:
            reading.PDF_SECONDS = float(request["seconds"])  # the soft check between pages names the page
            doc = read_pdf(data, request["doc_id"], request["source"])
            answer = {"text": doc.text, "title": doc.title, "metadata": doc.metadata, "page_starts": doc.page_starts}
        except reading.RejectedInputError as exc:
            answer = {"error": str(exc), "rejected": True}
        except ValueError as exc:
            answer = {"error": str(exc)}
        except MemoryError:
            answer = {"error": "too large to read in memory; skipped"}
        except Exception as exc:  # any failure of the reader is this file's, reported in one line
            answer = {"error": f"could not be read ({type(exc).__name__}); skipped"}
        write_out.write(json.dumps(answer).encode("utf-8") + b"\n")
        write_out.flush()
