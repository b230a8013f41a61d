"""What bounded reading costs: nvrag's JSONL loader against a plain unbounded one, on the same file, in one run.

    python bench/load_cost.py [--corpus ../shared/data/nfcorpus/corpus.jsonl] [--repeat 5]

The plain reader is what a loader without limits does (iterate lines, json.loads, build the Document); nvrag's
also checks the file is regular, caps each line's bytes, bounds JSON nesting and decodes per line. Best of
--repeat runs each. Also times bs4's two HTML tree builders on one large page (nvrag uses lxml: html.parser is
quadratic on some malformed markup), and PDF text extraction in process against in the reader's child process
(what the loaders do: a hard deadline, nvrag/indexer/pdf_process.py), median of 30 (needs fpdf2, the dev extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

from nvrag.indexer import load_corpus
from nvrag.schema import Document

REPO = Path(__file__).resolve().parent.parent


def plain(path: Path) -> int:
    n = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                obj = json.loads(line)
                Document(str(obj.pop("_id")), obj.pop("text"), str(path), obj.pop("title", None), obj)
                n += 1
    return n


def bounded(path: Path) -> int:
    return sum(1 for item in load_corpus(path) if isinstance(item, Document))


def best(fn: object, path: Path, repeat: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = fn(path)  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times), count


def html_parsers(repeat: int) -> None:
    """bs4 with Python's html.parser against bs4 with lxml (what read_html uses) on a 2 M-character page."""
    from bs4 import BeautifulSoup

    page = "<body>" + "<p>w</p>" * 249_000 + "</body>"
    for builder in ("html.parser", "lxml"):
        seconds, _ = best(lambda _, b=builder: len(BeautifulSoup(page, b).find_all("p")), Path(), repeat)
        print(f"HTML, {len(page):,} characters, 249,000 elements, bs4 + {builder:<11} {seconds:6.2f} s")


def pdf_child() -> None:
    """read_pdf in this process against extract_pdf (the same, in the reader's child) on 1- and 10-page PDFs."""
    import statistics

    from fpdf import FPDF

    from nvrag.indexer.formats import read_pdf
    from nvrag.indexer.pdf_process import PdfWorker

    worker = PdfWorker()
    started = time.perf_counter()
    with contextlib.suppress(ValueError):  # starts the child (its answer is an error: not a readable PDF)
        worker.extract(b"%PDF-1.4", "start", "start")
    print(f"PDF reader child: started and first answer in {(time.perf_counter() - started) * 1000:.0f} ms")
    for pages in (1, 10):
        pdf = FPDF()
        pdf.set_font("Helvetica", size=11)
        for page in range(pages):
            pdf.add_page()
            for line in range(40):
                text = f"page {page} line {line}: dense vectors and BM25 in one index"
                pdf.cell(text=text, new_x="LMARGIN", new_y="NEXT")
        data = bytes(pdf.output())
        for name, read in (("in process", read_pdf), ("in the child", worker.extract)):
            times = []
            for _ in range(30):
                begun = time.perf_counter()
                read(data, "d", "s")
                times.append(time.perf_counter() - begun)
            print(f"PDF, {pages:2d} pages ({len(data):,} bytes), {name:<12} {statistics.median(times) * 1000:6.1f} ms")
    worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data" / "nfcorpus" / "corpus.jsonl")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    size = args.corpus.stat().st_size
    base, n_plain = best(plain, args.corpus, args.repeat)
    ours, n_ours = best(bounded, args.corpus, args.repeat)
    assert n_plain == n_ours, (n_plain, n_ours)
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{args.corpus.name}: {n_ours} documents, {size / 2**20:.1f} MB")
    print(f"plain reader   {base * 1000:8.1f} ms  {size / 2**20 / base:6.1f} MB/s")
    print(
        f"nvrag, bounded {ours * 1000:8.1f} ms  {size / 2**20 / ours:6.1f} MB/s  ({ours / base:.2f}x the plain reader)"
    )
    html_parsers(max(1, args.repeat // 2))
    pdf_child()


if __name__ == "__main__":
    main()
