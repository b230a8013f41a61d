"""What bounded reading costs: nvrag's JSONL loader against a plain unbounded one, on the same file, in one run.

    python bench/load_cost.py [--corpus ../shared/data/nfcorpus/corpus.jsonl] [--repeat 5]

The plain reader is what a loader without limits does (iterate lines, json.loads, build the Document); nvrag's
also checks the file is regular, caps each line's bytes, bounds JSON nesting and decodes per line. Best of
--repeat runs each. Also times bs4's two HTML tree builders on one large page (nvrag uses lxml: html.parser is
quadratic on some malformed markup).
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
