"""Indexing throughput on a BEIR corpus with the bundled all-MiniLM-L6-v2, and the cost of a re-run.

    python bench/index_throughput.py [--corpus ../shared/data/nfcorpus/corpus.jsonl] [--limit N]

Indexes the corpus (chunked, default settings) into a fresh LanceDB in a temp dir and reports documents/s,
chunks/s and the share of wall time spent outside the model's forward pass (tokenising, chunking, writing);
then re-indexes the unchanged corpus and reports its time as a fraction of the first run.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from nvrag.embedder.base import FloatArray
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.indexer import Indexer, load_jsonl
from nvrag.store import LanceStore

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nfcorpus" / "corpus.jsonl"


class TimedMiniLM(MiniLMEmbedder):
    """MiniLM that adds up the wall time of its forward passes."""

    forward_seconds = 0.0

    def forward(self, batch: Sequence[Sequence[int]], prefix: str) -> FloatArray:
        start = time.perf_counter()
        try:
            return super().forward(batch, prefix)
        finally:
            self.forward_seconds += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    args = parser.parse_args()
    embedder = TimedMiniLM()
    embedder.embed_documents(["warm up the model"])  # load the weights outside the timing
    embedder.forward_seconds = 0.0
    store = LanceStore(tempfile.mkdtemp(prefix="nvrag-bench-"))

    def items():  # type: ignore[no-untyped-def]
        return itertools.islice(load_jsonl(args.corpus), args.limit)

    start = time.perf_counter()
    first = Indexer(store, embedder).index("bench", items())
    first_s = time.perf_counter() - start
    outside = first_s - embedder.forward_seconds
    start = time.perf_counter()
    again = Indexer(store, embedder).index("bench", items())
    again_s = time.perf_counter() - start
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"corpus: {args.corpus} ({first.documents} documents, {first.chunks_added} chunks)")
    print("| run | seconds | documents/s | chunks/s | outside forward |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| first | {first_s:.1f} | {first.documents / first_s:.1f} | {first.chunks_added / first_s:.1f} | "
        f"{100 * outside / first_s:.1f}% |"
    )
    print(f"| re-run (unchanged) | {again_s:.2f} | | | {100 * again_s / first_s:.1f}% of the first run |")
    assert again.chunks_added == 0 and again.chunks_unchanged == first.chunks_added


if __name__ == "__main__":
    main()
