"""Small files that cost a naive reader gigabytes, hours or its whole run: one per class, built on the fly."""

from __future__ import annotations

import io
import json
import os
import socket
import zipfile
import zlib
from pathlib import Path

BILLION_LAUGHS = (
    "---\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "---\n\n# Laughs\n\nthe text after the bomb\n"
)


def docx_bomb(inflated: int = 300 * 2**20) -> bytes:
    """A .docx whose word/document.xml inflates to ``inflated`` bytes (a few hundred KB on disk)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b" " * 2**20
            for _ in range(inflated // len(block)):
                member.write(block)
    return buffer.getvalue()


def pdf_bomb(inflated: int = 200 * 2**20) -> bytes:
    """A one-page PDF whose content stream inflates to ``inflated`` bytes."""
    compressor = zlib.compressobj(9)
    stream = b"".join(compressor.compress(b"0" * 2**20) for _ in range(inflated // 2**20)) + compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def build(root: Path) -> dict[str, str]:
    """A corpus of good files around every hostile class; returns {file name: expected reason prefix}.

    angles.html (malformed tags), deep.html (100,000 nested elements), wide.html (285,000 elements) and
    heading.md (a pathological heading) are documents, not failures: their readers must only stay linear and
    within memory."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a-good.txt").write_text("the first good document, read before every hostile one", encoding="utf-8")
    (root / "z-good.md").write_text("# Last\n\nthe last good document, read after them", encoding="utf-8")
    os.mkfifo(root / "fifo.txt")
    (root / "device.txt").symlink_to("/dev/zero")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(root / "socket.md"))  # the socket file stays after the socket is closed
    listener.close()
    (root / "laughs.md").write_text(BILLION_LAUGHS, encoding="utf-8")
    (root / "bomb.docx").write_bytes(docx_bomb())
    (root / "bomb.pdf").write_bytes(pdf_bomb())
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    (root / "deep.html").write_text("<div>" * 100_000 + "deep" + "</div>" * 100_000, encoding="utf-8")
    # malformed runs that Python's html.parser handles in quadratic time (minutes at this size)
    (root / "angles.html").write_text("<p>angles</p>" + "<a" * 900_000, encoding="utf-8")
    # a heading that sent a backtracking title regex into minutes of work
    (root / "heading.md").write_text("# a" + " " * 30_000 + "#" * 30_000 + " " * 30_000 + "b\n\nbody", "utf-8")
    # the largest page allowed, all elements: the parse tree's worst case
    (root / "wide.html").write_text("<body>" + "<p></p>" * 285_000 + "<p>wide</p></body>", encoding="utf-8")
    (root / "huge.html").write_text("<p>" + "v " * 1_100_000 + "</p>", encoding="utf-8")  # over the page limit
    (root / "one-word.txt").write_text("x" * 150_000, encoding="utf-8")  # one token, one huge chunk
    (root / "wide.csv").write_text("id,text\n1," + "y" * 300_000 + "\n", encoding="utf-8")
    lines = [
        json.dumps({"id": "line-1", "text": "a good line before the hostile ones"}),
        "[" * 100_000 + "]" * 100_000,
        json.dumps({"id": "line-3", "text": "w" * 5 * 2**20}),  # over the 4 MB line limit
        json.dumps({"id": "line-4", "text": "a good line after them"}),
    ]
    (root / "lines.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "fifo.txt": "a named pipe (FIFO), not a regular file",
        "device.txt": "a character device, not a regular file",
        "socket.md": "a socket, not a regular file",
        "laughs.md": "front matter uses YAML aliases",
        "bomb.docx": "the archive inflates to 300 MB, over the 100 MB limit",
        "bomb.pdf": "a PDF stream inflates past 8 MB, the limit",
        "deep.json": "JSON nested deeper than 64 levels",
        "huge.html": "2,200,007 characters of HTML is over the 2,000,000 limit for one page",
        "one-word.txt": "chunk 0 is 150,000 characters long, over the 100,000 limit",
        "wide.csv": "not a readable table",
        "lines.jsonl:2": "JSON nested deeper than 64 levels",
        "lines.jsonl:3": "line longer than 4 MB",
    }
