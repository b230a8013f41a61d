"""Binary quantisation on real embeddings: NFCorpus with the bundled all-MiniLM-L6-v2.

    python bench/binary_recall.py [--dataset ../shared/data/nfcorpus] [--db DIR]

Builds (or reuses, with --db) the dense evaluation index of `nvrag eval` (one vector per document), copies its
chunks and vectors into a second index with `quantization: binary`, and evaluates both with the same queries:
nDCG@10 and Recall@100 (pytrec_eval, MTEB protocol), and the overlap of each query's top 10 with exact search.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.evaluation import evaluate
from nvrag.evaluation.beir import load_dataset
from nvrag.retriever import Retriever
from nvrag.store import LanceStore

DEFAULT_DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nfcorpus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--db", type=Path, default=None, help="a data directory to keep (and reuse) the index in")
    args = parser.parse_args()
    store = LanceStore(str(args.db or tempfile.mkdtemp(prefix="nvrag-binary-")))
    embedder = MiniLMEmbedder()
    exact = evaluate(args.dataset, store, embedder)
    binary_name = f"{exact.index}-binary"[:64]
    if not store.exists(binary_name):
        source = store.open(exact.index)
        ids = sorted(set().union(*source.chunk_ids_by_doc().values()))
        target = store.create(replace(source.manifest, name=binary_name, table="", quantization="binary"))
        for i in range(0, len(ids), 2000):
            part = ids[i : i + 2000]
            vectors = source.vectors(part)
            target.upsert(source.get(part), np.stack([vectors[x] for x in part]))
    binary = evaluate(args.dataset, store, embedder, index=binary_name)
    queries = list(load_dataset(args.dataset).queries.values())
    tops = [
        [[h.chunk_id for h in hits] for hits in Retriever(store.open(name), embedder).search_many(queries, 10)]
        for name in (exact.index, binary_name)
    ]
    overlap = sum(len(set(a) & set(b)) for a, b in zip(*tops, strict=True)) / (10 * len(queries))
    same_top = sum(a[0] == b[0] for a, b in zip(*tops, strict=True)) / len(queries)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {exact.dataset}, {exact.model}, {exact.queries} queries"
    )
    print("| vectors | nDCG@10 | Recall@100 | top-10 overlap with exact | same top hit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = (("float32 (exact)", exact, 1.0, 1.0), ("binary + rescoring", binary, overlap, same_top))
    for label, result, lap, top in rows:
        m = result.metrics
        print(f"| {label} | {100 * m['nDCG@10']:.2f} | {100 * m['Recall@100']:.2f} | {lap:.3f} | {top:.3f} |")


if __name__ == "__main__":
    main()
