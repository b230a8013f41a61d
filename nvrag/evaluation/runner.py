"""`evaluate`: index a BEIR corpus (or reuse the index), run every judged query, score the run.

By default this follows the MTEB protocol, so the numbers compare with published ones: one vector per document
from ``title + " " + text`` (truncated by the model), queries with the task's instruction, and a document never
retrieved for a query with the same id. ``chunked=True`` evaluates a chunked index instead (a document's score
is its best chunk's).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvrag.embedder import Embedder
from nvrag.errors import ConfigError
from nvrag.evaluation.beir import Dataset, load_dataset
from nvrag.evaluation.metrics import METRICS, RECALL_CUTOFFS, Run, mean_metrics, per_query_metrics
from nvrag.indexer import Indexer, IndexReport, Progress, load_jsonl
from nvrag.indexer.chunking import default_settings, whole_documents
from nvrag.reranker import Reranker, ranked
from nvrag.retriever import DEFAULT_RERANK_DEPTH, Mode, Retriever
from nvrag.schema import Hit, passage_text
from nvrag.store import Store

DEPTH = 100  # documents per query: enough for MAP@100 and Recall@100
CHUNKS_PER_DOC = 4  # chunked mode fetches this many chunks per wanted document before grouping


@dataclass
class RerankedEval:
    """The same run reranked: the first ``depth`` documents of each query reordered by the reranker."""

    model: str
    depth: int
    instruction: str | None
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "depth": self.depth,
            "instruction": self.instruction,
            "metrics": self.metrics,
            "per_query": {q: {m: v[m] for m in METRICS} for q, v in self.per_query.items()},
            "seconds": round(self.seconds, 2),
        }


@dataclass
class EvalResult:
    dataset: str
    model: str
    mode: str
    split: str
    chunked: bool
    index: str
    instruction: str | None
    metrics: dict[str, float]  # fractions in [0, 1]
    per_query: dict[str, dict[str, float]]
    recall_curve: dict[int, float]
    queries: int
    indexing: IndexReport
    seconds_indexing: float
    seconds_queries: float
    skipped: list[str] = field(default_factory=list)
    reranked: RerankedEval | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "mode": self.mode,
            "split": self.split,
            "chunked": self.chunked,
            "index": self.index,
            "instruction": self.instruction,
            "queries": self.queries,
            "metrics": self.metrics,
            "recall_curve": {str(k): v for k, v in self.recall_curve.items()},
            "per_query": {q: {m: v[m] for m in METRICS} for q, v in self.per_query.items()},
            "indexing": self.indexing.to_dict(),
            "seconds": {"indexing": round(self.seconds_indexing, 2), "queries": round(self.seconds_queries, 2)},
            "skipped": self.skipped,
            **({"reranked": self.reranked.to_json()} if self.reranked is not None else {}),
        }


def eval_index_name(dataset: str, model: str, chunked: bool, dtype: str = "float32") -> str:
    """A stable index name per dataset, model, chunking and compute dtype (float32, the exact one, unnamed),
    within the 64 characters an index name allows."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{dataset}-{model}".lower()).strip("-")
    name = f"eval-{slug}-{'chunked' if chunked else 'doc'}" + ("" if dtype == "float32" else f"-{dtype}")
    if len(name) > 64:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:55]}-{digest}"
    return name


def evaluate(
    dataset_dir: Path,
    store: Store,
    embedder: Embedder,
    *,
    split: str = "test",
    mode: Mode = "dense",
    instruction: str | None = None,
    chunked: bool = False,
    index: str | None = None,
    query_batch: int = 64,
    on_progress: Callable[[Progress], None] | None = None,
    reranker: Reranker | None = None,
    rerank_depth: int = DEFAULT_RERANK_DEPTH,
    rerank_instruction: str | None = None,
) -> EvalResult:
    """Evaluate ``embedder`` (and/or BM25) on a BEIR dataset folder; see the module docstring. With a
    ``reranker``, the same run is also scored reranked: each query's first ``rerank_depth`` documents (their
    best chunk's passage) reordered by the reranker, the rest after them in retrieval order."""
    if not 1 <= rerank_depth <= DEPTH:
        raise ConfigError(f"the rerank depth must be between 1 and {DEPTH} (got {rerank_depth})")
    data = load_dataset(dataset_dir, split)
    computes = embedder.info.compute_dtype
    name = index or eval_index_name(data.name, embedder.name, chunked, computes)
    chunker = default_settings(embedder.max_text_tokens) if chunked else whole_documents()
    started = time.perf_counter()
    if store.exists(name):
        built = store.open(name).manifest
        if built.compute_dtype not in (computes, "unrecorded"):
            # its vectors are another dtype's: reusing them would report that dtype's figures as this one's
            raise ConfigError(
                f"index {name!r} was built computing in {built.compute_dtype}, and this evaluation computes in "
                f"{computes}: pass --dtype {built.compute_dtype} to reuse it, or remove it (nvrag drop {name})"
            )
        chunker = built.chunker  # reuse it as built; the model check still applies
    indexer = Indexer(store, embedder, chunker=chunker, on_progress=on_progress)
    report = indexer.index(name, load_jsonl(data.corpus))
    indexed = time.perf_counter()
    retriever = Retriever(store.open(name), embedder)
    run, passages = _run(retriever, data, mode, instruction, chunked, query_batch)
    per_query = per_query_metrics(data.qrels, run)
    finished = time.perf_counter()
    reranked = None
    if reranker is not None:
        rerun = rerank_run(reranker, data.queries, run, passages, rerank_depth, rerank_instruction)
        reranked = RerankedEval(
            model=reranker.name,
            depth=rerank_depth,
            instruction=rerank_instruction,
            metrics=mean_metrics(per_query_metrics(data.qrels, rerun)),
            per_query=per_query_metrics(data.qrels, rerun),
            seconds=time.perf_counter() - finished,
        )
    skipped = list(data.skipped)
    if report.failed:
        skipped.append(f"{report.failed} corpus lines could not be indexed (first: {report.failures[0].reason})")
    return EvalResult(
        dataset=data.name,
        model=embedder.name,
        mode=mode,
        split=split,
        chunked=chunked,
        index=name,
        instruction=instruction,
        metrics=mean_metrics(per_query),
        per_query=per_query,
        recall_curve=dict(
            zip(
                RECALL_CUTOFFS,
                mean_metrics(per_query, tuple(f"Recall@{k}" for k in RECALL_CUTOFFS)).values(),
                strict=True,
            )
        ),
        queries=len(data.queries),
        indexing=report,
        seconds_indexing=indexed - started,
        seconds_queries=finished - indexed,
        skipped=skipped,
        reranked=reranked,
    )


Passages = dict[str, dict[str, str]]  # query id → document id → its best chunk's passage


def _run(
    retriever: Retriever, data: Dataset, mode: Mode, instruction: str | None, chunked: bool, batch: int
) -> tuple[Run, Passages]:
    ids, texts = list(data.queries), list(data.queries.values())
    # one more than needed, so dropping the query's own id (MTEB) still leaves DEPTH documents
    k = (DEPTH + 1) * (CHUNKS_PER_DOC if chunked else 1)
    separator = retriever.table.manifest.chunker.title_separator
    run: Run = {}
    passages: Passages = {}
    for i in range(0, len(ids), batch):
        results = retriever.search_many(texts[i : i + batch], k, instruction=instruction, mode=mode)
        for qid, hits in zip(ids[i : i + batch], results, strict=True):
            docs: dict[str, Hit] = {}
            for hit in hits:  # best first: a document's first hit is its best chunk
                if hit.doc_id != qid and hit.doc_id not in docs:
                    docs[hit.doc_id] = hit
            kept = list(docs.values())[:DEPTH]
            run[qid] = {h.doc_id: h.score for h in kept}
            passages[qid] = {h.doc_id: passage_text(h, separator) for h in kept}
    return run, passages


def rerank_run(
    reranker: Reranker,
    queries: dict[str, str],
    run: Run,
    passages: Passages,
    depth: int,
    instruction: str | None,
) -> Run:
    """``run`` with each query's first ``depth`` documents reordered by the reranker's scores, the others after
    them in their order; scores become positions (descending), so ties cannot reorder anything."""
    out: Run = {}
    for qid, docs in run.items():
        order = list(docs)  # retrieval order: best first
        head = order[:depth]
        scores = reranker.score(queries[qid], [passages[qid][d] for d in head], instruction)
        final = [head[r.index] for r in ranked(scores)] + order[depth:]
        out[qid] = {doc: float(len(final) - position) for position, doc in enumerate(final)}
    return out
