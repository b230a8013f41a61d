"""Instructed dense search: embed the query with the index's model and instruction, top-k by cosine."""

from __future__ import annotations

from collections.abc import Sequence

from nvrag.embedder import Embedder
from nvrag.embedder.pinning import check_manifest_model
from nvrag.errors import ConfigError
from nvrag.schema import Hit
from nvrag.store import Table

MAX_K = 1000


class Retriever:
    """Searches one index with the embedder its manifest names (checked at construction)."""

    def __init__(self, table: Table, embedder: Embedder) -> None:
        check_manifest_model(table.manifest, embedder)
        self.table = table
        self.embedder = embedder

    def search(self, query: str, k: int = 10, *, instruction: str | None = None) -> list[Hit]:
        """The k chunks closest to ``query`` embedded in query mode with ``instruction``."""
        return self.search_many([query], k, instruction=instruction)[0]

    def search_many(self, queries: Sequence[str], k: int = 10, *, instruction: str | None = None) -> list[list[Hit]]:
        """Like search for several queries, embedding them in one batched call."""
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K} (got {k})")
        vectors = self.embedder.embed_queries(list(queries), instruction=instruction)
        results: list[list[Hit]] = []
        for vector in vectors:
            scored = self.table.search(vector, k)
            results.append(
                [
                    Hit(
                        rank=rank,
                        score=s.score,
                        chunk_id=s.chunk.chunk_id,
                        doc_id=s.chunk.doc_id,
                        source=s.chunk.source,
                        chunk_no=s.chunk.chunk_no,
                        text=s.chunk.text,
                        start=s.chunk.start,
                        end=s.chunk.end,
                        title=s.chunk.title,
                        metadata=s.chunk.metadata,
                    )
                    for rank, s in enumerate(scored, start=1)
                ]
            )
        return results
