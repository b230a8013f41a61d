"""Query → Hits: instructed dense search, BM25, hybrid (RRF), metadata filters, MMR, a rerank stage."""

from nvrag.limits import MAX_K, MAX_RERANK_DEPTH
from nvrag.retriever.dense import DEFAULT_RERANK_DEPTH, MODES, Mode, Retriever
from nvrag.retriever.filters import parse_filters
from nvrag.retriever.fusion import DEFAULT_RRF_K, mmr, rrf
from nvrag.retriever.opening import open_retriever

__all__ = [
    "DEFAULT_RERANK_DEPTH",
    "DEFAULT_RRF_K",
    "MAX_K",
    "MAX_RERANK_DEPTH",
    "MODES",
    "Mode",
    "Retriever",
    "mmr",
    "open_retriever",
    "parse_filters",
    "rrf",
]
