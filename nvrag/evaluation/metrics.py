"""IR metrics through pytrec_eval (trec_eval's implementation, the one BEIR and MTEB use)."""

from __future__ import annotations

from statistics import fmean

import pytrec_eval

METRICS = ("nDCG@10", "MAP@100", "Recall@100", "MRR@10")
RECALL_CUTOFFS = (1, 3, 5, 10, 20, 50, 100)
Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def _top(run: Run, k: int) -> Run:
    return {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:k]) for q, docs in run.items()}


def per_query_metrics(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """nDCG@10, MAP@100, Recall@100 and MRR@10 for every judged query (a query with no hits scores 0)."""
    full = {q: run.get(q, {}) for q in qrels}
    cut = ",".join(str(k) for k in RECALL_CUTOFFS)
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100", f"recall.{cut}"}).evaluate(full)
    # MRR@10: reciprocal rank of the first relevant document within the top 10 (as MTEB computes it)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(_top(full, 10))
    out: dict[str, dict[str, float]] = {}
    for q in qrels:
        s = scores.get(q, {})
        out[q] = {
            "nDCG@10": s.get("ndcg_cut_10", 0.0),
            "MAP@100": s.get("map_cut_100", 0.0),
            "Recall@100": s.get("recall_100", 0.0),
            "MRR@10": rr.get(q, {}).get("recip_rank", 0.0),
            **{f"Recall@{k}": s.get(f"recall_{k}", 0.0) for k in RECALL_CUTOFFS},
        }
    return out


def mean_metrics(per_query: dict[str, dict[str, float]], names: tuple[str, ...] = METRICS) -> dict[str, float]:
    return {name: fmean(m[name] for m in per_query.values()) for name in names}
