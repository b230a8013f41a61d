"""Rerankers: a query and candidate documents in, one relevance score per document out.

Cross-encoders (BERT sequence classifiers: ``cross_encoder.py``) and LLM rerankers (Qwen3-Reranker's form:
``llm.py``), each recognised from its checkpoint's own files (``loading.py``) and batched under a token budget
(``base.py``). Heavy modules (torch, the models) load only with a reranker.
"""

from nvrag.reranker.base import PairInput, Reranker, RerankerInfo, RerankResult, ranked
from nvrag.reranker.loading import KNOWN_RERANKERS, known_reranker, load_reranker

__all__ = [
    "KNOWN_RERANKERS",
    "PairInput",
    "RerankResult",
    "Reranker",
    "RerankerInfo",
    "known_reranker",
    "load_reranker",
    "ranked",
]
