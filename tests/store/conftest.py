"""The store suites' shared fixture: the NumPy brute-force store, filled with the conformance corpus, as oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvrag.store import Store
from nvrag.store.numpy_store import NumpyStore
from tests.store.test_conformance import DIM, corpus
from tests.store.test_lancedb_store import manifest


@pytest.fixture
def oracle(tmp_path: Path) -> Store:
    store = NumpyStore(tmp_path / "oracle")
    chunks, vectors = corpus()
    store.create(manifest(dim=DIM)).upsert(chunks, vectors)
    return store
