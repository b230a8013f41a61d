"""Open a retriever over a named index with the model its manifest pins: the one place this is done."""

from __future__ import annotations

from dataclasses import replace

from nvrag.embedder import LoadOptions, load_embedder
from nvrag.retriever.dense import Retriever
from nvrag.store import Store


def open_retriever(store: Store, index: str, options: LoadOptions | None = None) -> Retriever:
    """A Retriever for ``index`` that embeds with the index's own model (loaded with ``options``).

    The manifest's max length is not overridden: queries are truncated as the documents were; a Matryoshka
    index's vectors are cut to its dimension.
    """
    table = store.open(index)
    options = replace(options or LoadOptions(), max_length=None, dimensions=table.manifest.dimension)
    return Retriever(table, load_embedder(table.manifest.model, options))
