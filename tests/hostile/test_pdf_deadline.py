"""A PDF whose text extraction never ends in-process (a page drawing one form a million times) is stopped at the
deadline by killing the reader's child process; the next PDF is read; a killed parent leaves no child behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from nvrag.indexer import LoadFailure, load_corpus, reading
from nvrag.indexer.pdf_process import PdfWorker, _answer
from nvrag.schema import Document

GUARD_S = 120  # waits on processes: guards against a hang, never speed checks


def pdf(page: bytes, form: bytes | None = None) -> bytes:
    """A one-page PDF with this content stream; ``form`` becomes the Form XObject /X1 the page may draw."""
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    resources = b"<< /Font << /F1 5 0 R >>" + (b" /XObject << /X1 6 0 R >>" if form is not None else b"") + b" >>"

    def stream(content: bytes, extra: bytes = b"") -> bytes:
        packed = zlib.compress(content, 9)
        return b"<< %b/Length %d /Filter /FlateDecode >>\nstream\n%b\nendstream" % (extra, len(packed), packed)

    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources %b >>" % resources,
        stream(page),
        font,
    ]
    if form is not None:
        objects.append(stream(form, b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources %b " % resources))
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    table = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, table)


# an 11 KB file: the page draws a form of 10,000 empty text runs a million times (no text, so no size limit trips)
ENDLESS = pdf(b"/X1 Do " * 1_000_000, b"BT /F1 12 Tf 72 700 Td " + b"() Tj 1 0 Td " * 10_000 + b"ET")
GOOD = pdf(b"BT /F1 12 Tf 72 700 Td (a page of real text) Tj ET")


def test_extraction_is_killed_at_the_deadline_and_the_next_pdf_is_read() -> None:
    assert len(ENDLESS) < 16_384
    worker = PdfWorker()
    try:
        with pytest.raises(reading.RejectedInputError, match=r"^text extraction took over 2 s; skipped$"):
            worker.extract(ENDLESS, "endless.pdf", "/x/endless.pdf", seconds=2)
        doc = worker.extract(GOOD, "good.pdf", "/x/good.pdf", seconds=GUARD_S)  # a new child
        assert (doc.doc_id, doc.source, doc.title) == ("good.pdf", "/x/good.pdf", None)
        assert (doc.text, doc.page_starts) == ("a page of real text", (0,))
        assert doc.metadata == {"path": "good.pdf", "format": "pdf", "pages": 1}
        with pytest.raises(ValueError, match=r"^not a readable PDF \("):
            worker.extract(b"%PDF-1.4 garbage", "bad.pdf", "/x/bad.pdf", seconds=GUARD_S)  # its error, one line
    finally:
        worker.close()


def test_a_folder_with_an_endless_pdf_reports_it_and_reads_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "PDF_SECONDS", 2.0)
    (tmp_path / "a-endless.pdf").write_bytes(ENDLESS)
    (tmp_path / "b-good.pdf").write_bytes(GOOD)
    (tmp_path / "c.txt").write_text("plain text", encoding="utf-8")
    items = list(load_corpus(tmp_path))
    assert [type(i) for i in items] == [LoadFailure, Document, Document]
    failure = items[0]
    assert isinstance(failure, LoadFailure)
    assert (failure.doc_id, failure.reason) == ("a-endless.pdf", "text extraction took over 2 s; skipped")
    assert [d.text for d in items[1:] if isinstance(d, Document)] == ["a page of real text", "plain text"]


CHILD_PID = """
import sys, threading, time
from nvrag.indexer import pdf_process
worker = pdf_process.PdfWorker()
extract = lambda: worker.extract(pdf_process_data, "e", "e", seconds=3600)
threading.Thread(target=extract, daemon=True).start()
while worker._child is None:
    time.sleep(0.05)
print(worker._child.pid, flush=True)
time.sleep(3600)
"""


def test_a_killed_parent_leaves_no_reader_running(tmp_path: Path) -> None:
    endless = tmp_path / "endless.pdf"
    endless.write_bytes(ENDLESS)
    script = f"pdf_process_data = open({str(endless)!r}, 'rb').read()\n" + CHILD_PID
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            time.sleep(1.0)  # the child is extracting
            assert _alive(child)
        finally:
            parent.send_signal(signal.SIGKILL)
            parent.wait(GUARD_S)
    deadline = time.monotonic() + GUARD_S
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


MALFORMED = "the PDF reader gave a malformed answer; skipped"


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        (
            b'{"error": "encrypted PDF; skipped", "rejected": true}\n',
            reading.RejectedInputError,
            "encrypted PDF; skipped",
        ),
        (b'{"error": "not a readable PDF\\n(x)"}\n', ValueError, "not a readable PDF (x)"),
        (b"[1, 2]\n", ValueError, MALFORMED),
        (b'{"text": 5, "title": null, "metadata": {}, "page_starts": []}\n', ValueError, MALFORMED),
        (b'{"text": "t", "title": null, "metadata": [], "page_starts": [0]}\n', ValueError, MALFORMED),
        (b'{"text": "t", "title": null, "metadata": {}, "page_starts": ["x"]}\n', ValueError, MALFORMED),
        (b'{"text": "t", "metadata": {}, "page_starts": [0]}\n', ValueError, MALFORMED),
        (b"not json\n", ValueError, MALFORMED),
    ],
)
def test_an_answer_the_parent_cannot_trust_is_a_one_line_error(
    line: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        _answer(line, "d", "s")
    assert type(raised.value) is error and str(raised.value) == message


FORKED = """
import os, signal, sys, threading, time
from nvrag.indexer import pdf_process
good, endless = (open(path, "rb").read() for path in sys.argv[1:3])
first = pdf_process.extract_pdf(good, "a", "a").text
parents = pdf_process._WORKER._child.pid

def busy():
    try:
        pdf_process._WORKER.extract(endless, "e", "e", seconds=6)
    except ValueError:
        pass

thread = threading.Thread(target=busy)
thread.start()
time.sleep(1.0)  # the parent's reader is busy: its lock is held while this process forks
pid = os.fork()
if pid == 0:  # the copy reads with a reader of its own, and leaves the parent's alone when it exits
    signal.alarm(30)  # a copy stuck on the parent's lock is killed by SIGALRM, and the test fails
    ok = pdf_process.extract_pdf(good, "b", "b").text == first and pdf_process._WORKER._child.pid != parents
    pdf_process._WORKER.close()
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
thread.join()
print(os.waitstatus_to_exitcode(status), pdf_process.extract_pdf(good, "c", "c").text == first)
"""


def test_a_forked_process_starts_its_own_reader_and_leaves_its_parents(tmp_path: Path) -> None:
    good, endless = tmp_path / "good.pdf", tmp_path / "endless.pdf"
    good.write_bytes(GOOD)
    endless.write_bytes(ENDLESS)
    run = subprocess.run(
        [sys.executable, "-c", FORKED, str(good), str(endless)],
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )
    assert (run.returncode, run.stdout) == (0, "0 True\n"), run.stderr
