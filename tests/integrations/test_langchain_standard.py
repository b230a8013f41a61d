"""LangChain's own standard test suites (langchain-tests) against our adapters, nothing skipped.

The vector store suite runs on the bundled all-MiniLM-L6-v2 (it checks that "bar" finds "bar" first, which a
word-length fake could not tell from "foo"); every test gets an empty index in a fresh temp directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.indexer import Indexer
from nvrag.integrations.langchain import NVRagEmbeddings, NVRagRetriever, NVRagVectorStore
from nvrag.schema import Document as NvDocument
from nvrag.store import LanceStore

_minilm: MiniLMEmbedder | None = None


def shared_minilm() -> MiniLMEmbedder:
    global _minilm
    if _minilm is None:
        _minilm = MiniLMEmbedder()
    return _minilm


class TestNVRagEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[NVRagEmbeddings]:
        return NVRagEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "all-MiniLM-L6-v2"}


class TestNVRagEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[NVRagEmbeddings]:
        return NVRagEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "nvrag/fake-wordlen", "instruction": "query"}


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("lc-db")
    docs = [
        NvDocument(f"d{i}", f"document number {i} about {topic}", f"src/{i}")
        for i, topic in enumerate(["cats", "dogs", "birds", "fish", "horses", "snakes"])
    ]
    Indexer(LanceStore(str(db)), shared_minilm()).index("docs", docs)
    return db


class TestNVRagRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _db(self, corpus_db: Path) -> None:
        self.db = str(corpus_db)

    @property
    def retriever_constructor(self) -> type[NVRagRetriever]:
        return NVRagRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"db": self.db, "index": "docs"}

    @property
    def retriever_query_example(self) -> str:
        return "which document is about dogs?"


class TestNVRagVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[NVRagVectorStore]:  # type: ignore[override]
        yield NVRagVectorStore(NVRagEmbeddings.from_embedder(shared_minilm()), db=tmp_path / "db", index="lc")
