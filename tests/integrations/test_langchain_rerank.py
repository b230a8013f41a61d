"""The LangChain rerank pieces through langchain-core's own interfaces: NVRagReranker as a
BaseDocumentCompressor (composed as ContextualCompressionRetriever composes one: a base retriever's documents,
then compress_documents), and NVRagRetriever's rerank option; by-hand scores and the shared cross-encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.documents.compressor import BaseDocumentCompressor
from langchain_core.retrievers import BaseRetriever

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ConfigError
from nvrag.indexer import Indexer
from nvrag.integrations.langchain import NVRagReranker, NVRagRetriever
from nvrag.reranker import load_reranker
from nvrag.retriever import Retriever
from nvrag.schema import Document as NvDocument
from nvrag.store import LanceStore
from tests.conftest import REPO
from tests.reranker.fakes import SharedWords

BERT = REPO.parent / "shared" / "fixtures" / "family" / "bert-cross-encoder"


class Compressed(BaseRetriever):
    """What langchain's ContextualCompressionRetriever does: the base retriever's documents, compressed."""

    base: BaseRetriever
    compressor: BaseDocumentCompressor

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        docs = self.base.invoke(query)
        return list(self.compressor.compress_documents(docs, query, callbacks=run_manager.get_child()))


@pytest.fixture
def retriever(tmp_path: Path) -> Retriever:
    store = LanceStore(str(tmp_path / "db"))
    docs = [NvDocument("A", "apple banana pie", "s/A"), NvDocument("B", "cherry tart", "s/B")]
    Indexer(store, WordLengthEmbedder()).index("t", docs)
    return Retriever(store.open("t"), WordLengthEmbedder())


def test_the_compressor_keeps_the_top_n_by_the_reranker_s_scores(retriever: Retriever) -> None:
    base = NVRagRetriever.from_retriever(retriever, k=2, instruction="q")
    assert [d.metadata["doc_id"] for d in base.invoke("cherry xxxxx")] == ["A", "B"]
    compressor = NVRagReranker.from_reranker(SharedWords(), top_n=1)
    assert isinstance(compressor, BaseDocumentCompressor)
    (best,) = Compressed(base=base, compressor=compressor).invoke("cherry xxxxx")
    assert best.metadata["doc_id"] == "B" and best.metadata["relevance_score"] == 1.0  # "cherry" shared
    assert best.metadata["source"] == "s/B"  # the document's metadata is kept
    assert compressor.compress_documents([], "q") == []


async def test_the_async_compressor_matches() -> None:
    compressor = NVRagReranker.from_reranker(SharedWords(), top_n=None)
    docs = [Document(page_content="x y"), Document(page_content="a b"), Document(page_content="a")]
    got = await compressor.acompress_documents(docs, "a b")
    assert [(d.page_content, d.metadata["relevance_score"]) for d in got] == [("a b", 2.0), ("a", 1.0), ("x y", 0.0)]


def test_a_real_cross_encoder_from_its_folder() -> None:
    compressor = NVRagReranker(model=str(BERT), top_n=2, dtype="float32")
    texts = ["The capital of China is Beijing.", "Gravity is a force.", "Rome"]
    got = compressor.compress_documents([Document(page_content=t) for t in texts], "capital of China?")
    scores = load_reranker(BERT, dtype="float32").score("capital of China?", texts)
    best = np.argsort(-scores, kind="stable")[:2]
    assert [d.page_content for d in got] == [texts[i] for i in best]
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(scores[best].tolist(), abs=1e-6)
    with pytest.raises(ConfigError, match="needs model="):
        NVRagReranker().compress_documents([Document(page_content="x")], "q")


def test_the_retriever_s_rerank_option(retriever: Retriever) -> None:
    reranked = NVRagRetriever.from_retriever(retriever, reranker=SharedWords(), k=2, instruction="q")
    docs = reranked.invoke("cherry xxxxx")
    assert [(d.metadata["doc_id"], d.metadata["rerank_score"], d.metadata["retrieval_rank"]) for d in docs] == [
        ("B", 1.0, 2),
        ("A", 0.0, 1),
    ]


def test_the_retriever_loads_a_reranker_named_by_path(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    Indexer(store, WordLengthEmbedder()).index("t", [NvDocument("A", "a b", "s/A"), NvDocument("B", "c d", "s/B")])
    retriever = NVRagRetriever(db=str(tmp_path / "db"), index="t", k=2, rerank=str(BERT))
    docs = retriever.invoke("capital")
    assert len(docs) == 2 and all(isinstance(d.metadata["rerank_score"], float) for d in docs)
    scores = [d.metadata["rerank_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
