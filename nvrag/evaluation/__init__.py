"""Retrieval quality on BEIR-format datasets: `evaluate`, pytrec_eval metrics, the MTEB protocol."""

from nvrag.evaluation.beir import Dataset, load_dataset
from nvrag.evaluation.metrics import METRICS, mean_metrics, per_query_metrics
from nvrag.evaluation.runner import EvalResult, eval_index_name, evaluate

__all__ = [
    "METRICS",
    "Dataset",
    "EvalResult",
    "eval_index_name",
    "evaluate",
    "load_dataset",
    "mean_metrics",
    "per_query_metrics",
]
