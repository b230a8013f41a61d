"""Query → Hits: instructed dense search over one index."""

from nvrag.retriever.dense import MAX_K, Retriever

__all__ = ["MAX_K", "Retriever"]
