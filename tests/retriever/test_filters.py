from __future__ import annotations

from pathlib import Path

import pytest

from nvrag.errors import FilterError
from nvrag.retriever import parse_filters
from nvrag.schema import FilterCondition as C


def test_the_documented_forms() -> None:
    assert parse_filters(["lang = en", "year >= 2020 and year < 2022.5", "kind in (function, 'class')"]) == (
        C("lang", "=", "en"),
        C("year", ">=", 2020.0),
        C("year", "<", 2022.5),
        C("kind", "in", ("function", "class")),
    )


def test_quoting_numbers_and_case() -> None:
    assert parse_filters(["title = 'it''s AND more' AND n != -3e2", 'x="2020"', "y IN (1, 2)"]) == (
        C("title", "=", "it's AND more"),
        C("n", "!=", -300.0),
        C("x", "=", "2020"),
        C("y", "in", (1.0, 2.0)),
    )


def test_blank_filters_are_no_filter() -> None:
    assert parse_filters(["", "  "]) == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lang", "cannot read the filter condition 'lang'"),
        ("lang == en", "cannot read the filter condition"),
        ("1abc = x", "cannot read the filter condition"),
        ("kind in ()", "`in` needs at least one value"),
        ("n in (1, a)", "mix of numbers and text"),
        ("lang = en and", "cannot read the filter condition"),
        ("lang = en or lang = de", "`or` is not supported; .* `field in \\(a, b\\)`"),
    ],
)
def test_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filters([text])


@pytest.mark.parametrize("kind", ["lance", "faiss"])
def test_a_misspelt_field_is_named_with_the_fields_there_are(tmp_path: Path, kind: str) -> None:
    from nvrag.embedder import WordLengthEmbedder
    from nvrag.indexer import Indexer
    from nvrag.retriever import Retriever
    from nvrag.schema import Document
    from nvrag.store import LanceStore
    from nvrag.store.faiss_store import FaissStore

    store = FaissStore(tmp_path / "f") if kind == "faiss" else LanceStore(str(tmp_path / "l"))
    fake = WordLengthEmbedder()
    docs = [Document("a", "aa bb", "x", metadata={"lang": "en"}), Document("b", "ccc", "y", metadata={"year": 2020})]
    Indexer(store, fake).index("t", docs)
    retriever = Retriever(store.open("t"), fake)
    with pytest.raises(
        FilterError, match=r"has the field 'lnag'; its fields: chunk_no, doc_id, source, title, lang, year"
    ):
        retriever.search("aa", instruction="q", filters=parse_filters(["lnag = en"]))
    assert retriever.search("aa", instruction="q", filters=parse_filters(["lang = fr"])) == []  # a real field
    assert [h.doc_id for h in retriever.search("aa", instruction="q", filters=parse_filters(["lang = en"]))] == ["a"]
