"""Search one index: dense (instructed query embedding, cosine), BM25, or hybrid (RRF), with metadata
filters, a minimum score and optional MMR diversification. One ``Hit`` type for all of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from nvrag.embedder import Embedder
from nvrag.embedder.pinning import check_manifest_model
from nvrag.errors import ConfigError, FilterError
from nvrag.limits import MAX_K, MAX_QUERY_CHARS, MAX_RERANK_DEPTH
from nvrag.reranker import Reranker, ranked
from nvrag.retriever.fusion import DEFAULT_RRF_K, mmr, rrf
from nvrag.schema import FilterCondition, Hit, passage_text
from nvrag.store import ScoredChunk, Table
from nvrag.store.base import COLUMN_FIELDS

DEFAULT_RERANK_DEPTH = 50  # first-stage candidates a reranker scores
Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "bm25", "hybrid")
HYBRID_DEPTH = 100  # how deep each retriever's list goes before fusion


@dataclass
class _Candidate:
    item: ScoredChunk
    score: float
    dense: tuple[int, float] | None = None
    bm25: tuple[int, float] | None = None


class Retriever:
    """Searches one index with the embedder its manifest names (checked at construction)."""

    def __init__(self, table: Table, embedder: Embedder) -> None:
        check_manifest_model(table.manifest, embedder)
        self.table = table
        self.embedder = embedder

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        instruction: str | None = None,
        mode: Mode = "dense",
        filters: Sequence[FilterCondition] = (),
        min_score: float | None = None,
        mmr_lambda: float | None = None,
        rrf_k: int = DEFAULT_RRF_K,
        reranker: Reranker | None = None,
        rerank_depth: int = DEFAULT_RERANK_DEPTH,
        rerank_instruction: str | None = None,
    ) -> list[Hit]:
        """The k best chunks for ``query``; see ``search_many`` for the options."""
        return self.search_many(
            [query],
            k,
            instruction=instruction,
            mode=mode,
            filters=filters,
            min_score=min_score,
            mmr_lambda=mmr_lambda,
            rrf_k=rrf_k,
            reranker=reranker,
            rerank_depth=rerank_depth,
            rerank_instruction=rerank_instruction,
        )[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        instruction: str | None = None,
        mode: Mode = "dense",
        filters: Sequence[FilterCondition] = (),
        min_score: float | None = None,
        mmr_lambda: float | None = None,
        rrf_k: int = DEFAULT_RRF_K,
        reranker: Reranker | None = None,
        rerank_depth: int = DEFAULT_RERANK_DEPTH,
        rerank_instruction: str | None = None,
    ) -> list[list[Hit]]:
        """Search several queries; dense query vectors are embedded in one batched call.

        - ``mode``: "dense" (cosine of instructed query embeddings), "bm25" (LanceDB full-text, title and text)
          or "hybrid" (both, each to depth 100, fused by reciprocal rank fusion with constant ``rrf_k``).
        - ``filters``: metadata conditions, all of which must hold, applied before ranking (prefilter).
        - ``min_score``: drop hits whose final score is lower (cosine, BM25 or RRF, by mode).
        - ``mmr_lambda``: re-rank the candidates by maximal marginal relevance (1 = relevance only, 0 = most
          diverse); scores stay the retrievers' own, ranks follow the MMR order.
        - ``reranker``: score the first ``rerank_depth`` candidates (dense, bm25 or hybrid, after filters and
          ``min_score``) with it and return the k best by its score; each hit keeps its retrieval ``score`` and
          ``retrieval_rank`` and gains ``rerank_score`` (``rerank_instruction``: the reranker's own instruction,
          for LLM rerankers; None for its default).
        """
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K} (got {k})")
        if mode not in MODES:
            raise ConfigError(f"unknown search mode {mode!r}; use dense, bm25 or hybrid")
        if mmr_lambda is not None and not 0.0 <= mmr_lambda <= 1.0:
            raise ConfigError(f"MMR lambda must be between 0 and 1 (got {mmr_lambda})")
        if rrf_k < 1:
            raise ConfigError(f"the RRF constant (--rrf-k) must be 1 or more (got {rrf_k})")
        if reranker is not None:
            check_rerank(k, rerank_depth, mmr_lambda)
        for q in queries:
            if len(q) > MAX_QUERY_CHARS:
                raise ConfigError(f"a query is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}")
        needs_vectors = mode != "bm25" or mmr_lambda is not None
        # the prompt the index recorded (the model's at build time), with this search's instruction
        prefix = self.embedder.query_prefix(instruction, self.table.manifest.query_template)
        vectors = self.embedder.embed_with_prefix(list(queries), prefix) if needs_vectors else None
        depth = k if mode == "dense" and mmr_lambda is None else max(HYBRID_DEPTH if mode == "hybrid" else k, 4 * k)
        if reranker is not None:
            depth = max(depth, rerank_depth)
        results = []
        for i, query in enumerate(queries):
            vector = vectors[i] if vectors is not None else None
            candidates = self._candidates(query, vector, mode, depth, filters, rrf_k, mmr_lambda is not None)
            if min_score is not None:
                candidates = [c for c in candidates if c.score >= min_score]
            if mmr_lambda is not None and vector is not None:
                candidates = self._diversify(vector, candidates, k, mmr_lambda)
            if reranker is not None:
                first = [_hit(rank, c) for rank, c in enumerate(candidates[:rerank_depth], start=1)]
                separator = self.table.manifest.chunker.title_separator
                results.append(reranked(reranker, query, first, k, rerank_instruction, separator))
                continue
            results.append([_hit(rank, c) for rank, c in enumerate(candidates[:k], start=1)])
        if filters and not any(results):
            self._check_fields(filters)  # nothing matched: a misspelt field says so instead
        return results

    def _check_fields(self, filters: Sequence[FilterCondition]) -> None:
        """FilterError naming a filtered field that no chunk of the index has, with the fields it has."""
        own = set(COLUMN_FIELDS)
        asked = [c.field for c in filters if c.field not in own]
        if not asked:
            return
        fields = self.table.metadata_fields()
        if fields is None:  # too large an index to list its fields for a message
            return
        unknown = [f for f in dict.fromkeys(asked) if f not in fields]
        if unknown:
            known = ", ".join(sorted(own) + sorted(fields))
            raise FilterError(
                f"no document of index {self.table.manifest.name!r} has the field {unknown[0]!r}; its fields: {known}"
            )

    def _candidates(
        self,
        query: str,
        vector: npt.NDArray[np.float32] | None,
        mode: Mode,
        depth: int,
        filters: Sequence[FilterCondition],
        rrf_k: int,
        with_vectors: bool,
    ) -> list[_Candidate]:
        dense = self.table.search(vector, depth, filters, with_vectors=with_vectors) if vector is not None else []
        if mode == "dense":
            return [_Candidate(s, s.score, dense=(r, s.score)) for r, s in enumerate(dense, start=1)]
        bm25 = self.table.text_search(query, depth, filters)
        if mode == "bm25":
            return [_Candidate(s, s.score, bm25=(r, s.score)) for r, s in enumerate(bm25, start=1)]
        by_id: dict[str, _Candidate] = {}
        for name, listed in (("dense", dense), ("bm25", bm25)):
            for rank, s in enumerate(listed, start=1):
                c = by_id.setdefault(s.chunk.chunk_id, _Candidate(s, 0.0))
                if name == "dense":
                    c.item, c.dense = s, (rank, s.score)  # the dense copy carries the vector
                else:
                    c.bm25 = (rank, s.score)
        fused = rrf([[s.chunk.chunk_id for s in dense], [s.chunk.chunk_id for s in bm25]], k=rrf_k)
        return [replace(by_id[chunk_id], score=score) for chunk_id, score in fused]

    def _diversify(
        self, query: npt.NDArray[np.float32], candidates: list[_Candidate], k: int, lambda_: float
    ) -> list[_Candidate]:
        missing = [c.item.chunk.chunk_id for c in candidates if c.item.vector is None]
        fetched = self.table.vectors(missing) if missing else {}
        matrix = (
            np.stack(
                [c.item.vector if c.item.vector is not None else fetched[c.item.chunk.chunk_id] for c in candidates]
            )
            if candidates
            else np.zeros((0, len(query)), dtype=np.float32)
        )
        return [candidates[i] for i in mmr(query, matrix, k, lambda_)]


def check_rerank(k: int, depth: int, mmr_lambda: float | None) -> None:
    if not k <= depth <= MAX_RERANK_DEPTH:
        raise ConfigError(f"the rerank depth must be between k ({k}) and {MAX_RERANK_DEPTH} (got {depth})")
    if mmr_lambda is not None:
        raise ConfigError("MMR and reranking each set the final order; use one of them")


def reranked(
    reranker: Reranker, query: str, hits: list[Hit], k: int, instruction: str | None, separator: str = "\n"
) -> list[Hit]:
    """``hits`` (the first stage's, in its order) ordered by the reranker's scores of their passages (title and
    text, as the index embedded them: schema.passage_text), the k best; ties keep the first stage's order."""
    scores = reranker.score(query, [passage_text(h, separator) for h in hits], instruction)
    return [
        replace(hits[r.index], rank=rank, retrieval_rank=hits[r.index].rank, rerank_score=r.relevance_score)
        for rank, r in enumerate(ranked(scores, k), start=1)
    ]


def _hit(rank: int, c: _Candidate) -> Hit:
    return Hit.of(c.item.chunk, rank, c.score, dense=c.dense, bm25=c.bm25)
