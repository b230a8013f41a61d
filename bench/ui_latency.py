"""Search latency as the web UI sees it: the UI's search callback (embed the query, search LanceDB, render
the cards) on the demo index with the bundled all-MiniLM-L6-v2. The browser and network are not included.

    python bench/ui_latency.py [--db DIR] [--repeat 5]

Builds the demo index in DIR (default: a temp dir) if it is not there, then times every query of a fixed list
in dense and hybrid mode and prints p50/p95/max in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.indexer import Indexer, load_corpus
from nvrag.retriever import Retriever
from nvrag.store import LanceStore
from nvrag.ui.callbacks import DEFAULT_TASK, UIContext, search

QUERIES = [
    "compute a SHA-256 digest of a file",
    "run a shell command and capture its output",
    "create a temporary directory",
    "parse command line arguments",
    "read a CSV file",
    "generate a random password token",
    "compress data with gzip",
    "format a date as ISO 8601",
    "sort a list with a key function",
    "start a thread and wait for it",
]
CORPUS = Path(__file__).resolve().parent.parent / "data" / "demo" / "stdlib.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    db = args.db or tempfile.mkdtemp(prefix="nvrag-ui-bench-")
    store = LanceStore(db)
    embedder = MiniLMEmbedder()
    if not store.exists("demo"):
        Indexer(store, embedder).index("demo", load_corpus(CORPUS))
    retriever = Retriever(store.open("demo"), embedder)
    ctx = UIContext(store=store, retriever_for=lambda _: retriever, run_index=lambda _: None, upload_root=Path(db))  # type: ignore[arg-type, return-value]
    search(ctx, "demo", "warm up", DEFAULT_TASK, "", 10, "dense", "")
    print(f"demo index: {retriever.table.count()} chunks; {len(QUERIES)} queries x {args.repeat}; k=10")
    print("| mode | p50 ms | p95 ms | max ms |\n| --- | ---: | ---: | ---: |")
    for mode in ("dense", "hybrid"):
        times = []
        for _ in range(args.repeat):
            for query in QUERIES:
                start = time.perf_counter()
                page = search(ctx, "demo", query, DEFAULT_TASK, "", 10, mode, "")
                times.append((time.perf_counter() - start) * 1000)
                assert 'data-testid="hit"' in page
        times.sort()
        p95 = times[int(0.95 * (len(times) - 1))]
        print(f"| {mode} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} |")


if __name__ == "__main__":
    main()
