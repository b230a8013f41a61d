"""Token windows with overlap, spans into the source text, and the model's limit."""

from __future__ import annotations

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.embedder.minilm import MiniLMEmbedder
from nvrag.errors import ConfigError
from nvrag.indexer.chunking import check_settings, chunk_document, chunk_id, default_settings
from nvrag.schema import ChunkerSettings, Document

DOC = Document(doc_id="d", text="w0 w1 w2 w3 w4 w5 w6", source="s", title="T", metadata={"k": 1})


def test_windows_overlap_and_keep_their_spans(fake: WordLengthEmbedder) -> None:
    chunks = chunk_document(DOC, fake.token_spans, ChunkerSettings(3, 1), "m@1")
    assert [c.text for c in chunks] == ["w0 w1 w2", "w2 w3 w4", "w4 w5 w6"]
    assert [(c.start, c.end) for c in chunks] == [(0, 8), (6, 14), (12, 20)]
    assert all(DOC.text[c.start : c.end] == c.text for c in chunks)
    assert [c.chunk_no for c in chunks] == [0, 1, 2]
    assert all((c.doc_id, c.source, c.title, c.metadata) == ("d", "s", "T", {"k": 1}) for c in chunks)


def test_last_window_ends_at_the_last_token(fake: WordLengthEmbedder) -> None:
    chunks = chunk_document(DOC, fake.token_spans, ChunkerSettings(4, 0), "m@1")
    assert [c.text for c in chunks] == ["w0 w1 w2 w3", "w4 w5 w6"]


def test_chunk_ids_depend_on_model_settings_and_content() -> None:
    base = chunk_id("m@1", ChunkerSettings(3, 1), "d", 0, "x")
    assert base == chunk_id("m@1", ChunkerSettings(3, 1), "d", 0, "x")
    others = {
        chunk_id("m@2", ChunkerSettings(3, 1), "d", 0, "x"),
        chunk_id("m@1", ChunkerSettings(4, 1), "d", 0, "x"),
        chunk_id("m@1", ChunkerSettings(3, 1), "e", 0, "x"),
        chunk_id("m@1", ChunkerSettings(3, 1), "d", 1, "x"),
        chunk_id("m@1", ChunkerSettings(3, 1), "d", 0, "y"),
    }
    assert base not in others and len(others) == 5


def test_settings_are_checked_against_the_model() -> None:
    with pytest.raises(ConfigError, match="exceeds the model's limit of 254 tokens"):
        check_settings(ChunkerSettings(300, 10), 254)
    with pytest.raises(ConfigError, match="smaller than the chunk size"):
        check_settings(ChunkerSettings(10, 10), 254)
    with pytest.raises(ConfigError, match="at least 1 token"):
        check_settings(ChunkerSettings(0, 0), 254)
    assert default_settings(254) == ChunkerSettings(200, 32)
    assert default_settings(64) == ChunkerSettings(64, 16)


def test_minilm_chunks_never_exceed_the_model_limit(minilm: MiniLMEmbedder) -> None:
    text = " ".join(f"word{i} is followed by punctuation, and more!" for i in range(300))
    doc = Document(doc_id="long", text=text, source="s")
    settings = default_settings(minilm.max_text_tokens)
    chunks = chunk_document(doc, minilm.token_spans, settings, "m")
    assert len(chunks) > 10
    for c in chunks:
        ids = minilm.tokenize([c.text], "")[0]
        assert len(minilm.token_spans(c.text)) <= settings.chunk_tokens
        assert len(ids) <= minilm.info.max_tokens and ids[-1] == 102  # [SEP] still there: nothing truncated


def pieces(text: str) -> list[tuple[int, int]]:
    """Subword-like tokens: every two characters of each word."""
    spans: list[tuple[int, int]] = []
    at = 0
    for word in text.split(" "):
        spans.extend((at + i, at + min(i + 2, len(word))) for i in range(0, len(word), 2))
        at += len(word) + 1
    return spans


def test_windows_do_not_cut_words_when_they_can_avoid_it() -> None:
    doc = Document(doc_id="d", text="abcd ef ghij kl", source="s")
    # tokens: ab cd | ef | gh ij | kl ; a 3-token window would end inside "ghij", so it ends after "ef"
    chunks = chunk_document(doc, pieces, ChunkerSettings(3, 1), "m")
    assert [c.text for c in chunks] == ["abcd ef", "ef ghij", "ghij kl"]


def test_a_word_longer_than_the_window_is_cut() -> None:
    doc = Document(doc_id="d", text="abcdefgh ij", source="s")
    chunks = chunk_document(doc, pieces, ChunkerSettings(2, 0), "m")
    assert [c.text for c in chunks] == ["abcd", "efgh", "ij"]


def test_structure_first_paragraphs_headings_then_sentences(fake: WordLengthEmbedder) -> None:
    text = "# Intro\nOne two three.\n\nFour five six seven eight. Nine ten eleven.\n# Next\nTwelve thirteen"
    doc = Document(doc_id="d", text=text, source="s")
    chunks = chunk_document(doc, fake.token_spans, ChunkerSettings(8, 0), "m")
    # window 1 could take 8 tokens ("Intro" ... "six"); it ends at the paragraph break after "three."
    # window 2 holds exactly 8 tokens and ends before the heading
    assert [c.text for c in chunks] == [
        "Intro\nOne two three",
        "Four five six seven eight. Nine ten eleven",
        "Next\nTwelve thirteen",
    ]
    sentences = Document(doc_id="s", text="a b c d. e f g h i j", source="s")
    # a 6-token window would end after "f"; the sentence end after "d." in its second half wins
    assert [c.text for c in chunk_document(sentences, fake.token_spans, ChunkerSettings(6, 0), "m")] == [
        "a b c d",
        "e f g h i j",
    ]
