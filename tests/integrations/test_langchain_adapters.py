"""Our adapters' own promises, beyond the standard suites."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.errors import ModelMismatchError
from nvrag.indexer import Indexer
from nvrag.integrations.langchain import NVRagEmbeddings, NVRagRetriever, NVRagVectorStore
from nvrag.retriever import Retriever
from nvrag.schema import Document as NvDocument
from nvrag.store import LanceStore
from tests.conftest import REPO


def test_embed_query_uses_the_query_path_with_the_instruction() -> None:
    emb = NVRagEmbeddings.from_embedder(WordLengthEmbedder(), instruction="find")
    # "find: a" -> e3 + e0 (query path); the document path gives e0 alone
    assert emb.embed_query("a")[:4] == pytest.approx([1 / math.sqrt(2), 0, 0, 1 / math.sqrt(2)])
    assert emb.embed_documents(["a"])[0][:4] == pytest.approx([1.0, 0, 0, 0])
    assert all(type(x) is float for x in emb.embed_query("a"))


async def test_async_variants_match() -> None:
    emb = NVRagEmbeddings.from_embedder(WordLengthEmbedder(), task="NQ")
    assert await emb.aembed_query("abc") == emb.embed_query("abc")
    assert await emb.aembed_documents(["abc", "de"]) == emb.embed_documents(["abc", "de"])


@pytest.fixture
def fake_db(tmp_path: Path) -> str:
    docs = [
        NvDocument("A", "apple banana", "s/A", metadata={"lang": "en"}),
        NvDocument("B", "cherry tart", "s/B", metadata={"lang": "de"}),
    ]
    Indexer(LanceStore(str(tmp_path)), WordLengthEmbedder()).index("t", docs)
    return str(tmp_path)


def test_retriever_documents_carry_source_span_and_score(fake_db: str) -> None:
    retriever = NVRagRetriever(db=fake_db, index="t", k=2, instruction="q")
    docs = retriever.invoke("apple")
    assert len(docs) == 2
    meta = docs[0].metadata
    assert {"source", "doc_id", "chunk_id", "start", "end", "score", "lang"} <= set(meta)
    assert meta["end"] - meta["start"] == len(docs[0].page_content) and docs[0].id == meta["chunk_id"]
    assert len(retriever.invoke("apple", k=1)) == 1
    assert [d.metadata["doc_id"] for d in retriever.invoke("apple", filters=["lang = de"])] == ["B"]
    hybrid = retriever.invoke("banana", mode="hybrid", k=1)
    assert hybrid[0].metadata["doc_id"] == "A"


def test_retriever_from_an_nvrag_retriever(fake_db: str) -> None:
    fake = WordLengthEmbedder()
    wrapped = NVRagRetriever.from_retriever(Retriever(LanceStore(fake_db).open("t"), fake), k=1, mode="bm25")
    assert [d.metadata["doc_id"] for d in wrapped.invoke("cherry")] == ["B"]


def test_vector_store_pins_the_model(tmp_path: Path) -> None:
    NVRagVectorStore(NVRagEmbeddings.from_embedder(WordLengthEmbedder()), db=tmp_path, index="v")
    with pytest.raises(ModelMismatchError, match="was built with nvrag/fake-wordlen"):
        NVRagVectorStore(NVRagEmbeddings.from_embedder(WordLengthEmbedder(dimension=4)), db=tmp_path, index="v")
    with pytest.raises(TypeError, match="pass NVRagEmbeddings"):
        NVRagVectorStore(object(), db=tmp_path)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_documented_chain_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = (REPO / "docs" / "langchain.md").read_text(encoding="utf-8")
    block = re.findall(r"```python\n(.*?)```", page, flags=re.S)[0]  # the chain; the next needs the langchain package
    exec(compile(block, "docs/langchain.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("Answer from these notes:\n[storage] LanceDB is an embedded vector database")
    assert out.rstrip().endswith("Question: Which database stores the vectors?")
