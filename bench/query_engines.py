"""The bundled model's two float32 engines on query-sized batches: NumPy (bert_numpy.py) against PyTorch.

    python bench/query_engines.py [--repeat 20]

For each shape (rows x words of a repeated word, so the token count is known), the median milliseconds of
``embed_queries`` on each engine, in one process, after a warm-up, on torch's and NumPy's default threads, and
the largest difference between their vectors. This is what MiniLMEmbedder's NUMPY_MAX_TOKENS is chosen from:
up to it the NumPy engine costs at most tens of milliseconds more, against `import torch` (1.5 s) for a
one-shot search.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from nvrag.embedder.minilm import MiniLMEmbedder

SHAPES = ((1, 6), (1, 30), (1, 60), (1, 125), (1, 254), (4, 60))


def median_ms(embedder: MiniLMEmbedder, texts: list[str], repeat: int) -> float:
    embedder.embed_queries(texts)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        embedder.embed_queries(texts)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    on_numpy, on_torch = MiniLMEmbedder(engine="numpy"), MiniLMEmbedder(engine="torch")
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; median of {args.repeat}")
    print("| rows x tokens | NumPy ms | PyTorch ms | max abs difference |")
    print("| --- | --- | --- | --- |")
    for rows, words in SHAPES:
        texts = [" ".join(["protein"] * words)] * rows
        tokens = len(on_numpy.tokenize(texts[:1], "")[0])
        diff = float(np.abs(on_numpy.embed_queries(texts) - on_torch.embed_queries(texts)).max())
        numpy_ms, torch_ms = median_ms(on_numpy, texts, args.repeat), median_ms(on_torch, texts, args.repeat)
        print(f"| {rows} x {tokens} | {numpy_ms:.1f} | {torch_ms:.1f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
