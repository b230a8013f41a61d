"""WholeDocuments: batches that cut across documents, in any order, are handed over only as whole documents."""

from __future__ import annotations

import pytest

from nvrag.indexer.whole_documents import WholeDocuments


def test_batches_wait_until_every_document_they_touch_is_whole() -> None:
    whole: WholeDocuments[str] = WholeDocuments({"a": 3, "b": 2, "c": 1})
    assert whole.add("1", {"a": 2}) is None  # a: 1 chunk to go
    assert whole.add("2", {"a": 1, "b": 1}) is None  # a whole, b not
    assert whole.held == 2
    assert whole.add("3", {"b": 1, "c": 1}) == (["1", "2", "3"], ["a", "b", "c"])
    assert whole.held == 0


def test_out_of_order_batches_and_documents_with_nothing_new() -> None:
    whole: WholeDocuments[str] = WholeDocuments({"a": 2, "b": 1, "unchanged": 0})
    assert whole.add("second half of a", {"a": 1}) is None
    assert whole.add("b", {"b": 1}) is None  # b is whole, but a held batch waits for a
    assert whole.add("first half of a", {"a": 1}) == (["second half of a", "b", "first half of a"], ["a", "b"])


def test_each_whole_group_is_handed_over_as_soon_as_it_is_whole() -> None:
    whole: WholeDocuments[int] = WholeDocuments({"a": 1, "b": 1})
    assert whole.add(1, {"a": 1}) == ([1], ["a"])
    assert whole.add(2, {"b": 1}) == ([2], ["b"])


def test_more_chunks_than_a_document_has_is_a_bug_not_a_commit() -> None:
    whole: WholeDocuments[int] = WholeDocuments({"a": 1})
    with pytest.raises(ValueError, match="document 'a': more chunks staged than it has"):
        whole.add(1, {"a": 2})
