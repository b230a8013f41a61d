"""Commits of whole documents from batches that cut across them.

A distributed engine stages its chunks in batches of a fixed number of rows, so a document's chunks can land in
two batches, or arrive out of order. ``WholeDocuments`` holds staged batches until every document they touch
has all its new chunks staged, then hands them over together: the caller commits them with those documents'
stale chunks in one transaction (TableWriter.commit), so no reader, and no crash, ever sees part of a document's
new version, or its old and new versions at once. Batches that never complete (a run stopped or killed) are
never committed: their documents keep their old version, and a re-run embeds them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class WholeDocuments(Generic[T]):
    """``needed``: how many new chunks each document has to stage."""

    def __init__(self, needed: Mapping[str, int]) -> None:
        self._missing = {doc: n for doc, n in needed.items() if n > 0}
        self._held: list[T] = []
        self._touched: set[str] = set()

    @property
    def held(self) -> int:
        """Batches waiting for the rest of a document."""
        return len(self._held)

    def add(self, batch: T, counts: Mapping[str, int]) -> tuple[list[T], list[str]] | None:
        """One staged batch, with how many chunks of each document it holds. When every document the held
        batches touch is complete: those batches and documents (to commit together); else None."""
        for doc, n in counts.items():
            left = self._missing.get(doc, 0) - n
            if left < 0:
                raise ValueError(f"document {doc!r}: more chunks staged than it has")
            if left:
                self._missing[doc] = left
            else:
                self._missing.pop(doc, None)
        self._held.append(batch)
        self._touched.update(counts)
        if any(doc in self._missing for doc in self._touched):
            return None
        batches, docs = self._held, sorted(self._touched)
        self._held, self._touched = [], set()
        return batches, docs
