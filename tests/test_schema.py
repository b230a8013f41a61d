"""The shared value types: a Chunk's stored row, and a Hit built from a Chunk plus its scores."""

from __future__ import annotations

import json
from dataclasses import fields

from nvrag.schema import CHUNK_COLUMNS, Chunk, Hit

CHUNK = Chunk(
    chunk_id="c1",
    doc_id="d",
    source="/src/d.pdf",
    chunk_no=3,
    text="some text",
    start=10,
    end=19,
    title="A title",
    metadata={"page": 2, "lang": "en", "nested": {"b": [1, 2]}},
)


def test_a_chunk_row_holds_every_field_and_reads_back_as_the_same_chunk() -> None:
    row = CHUNK.to_row()
    assert tuple(row) == tuple(f.name for f in fields(Chunk))
    assert set(row) == set(CHUNK_COLUMNS)
    assert json.loads(row["metadata"]) == CHUNK.metadata
    assert Chunk.from_row(row) == CHUNK
    # what a store hands back: extra columns ignored, numbers as floats or numpy ints, metadata as JSON or dict
    stored = {**row, "chunk_no": 3.0, "start": 10.0, "_distance": 0.1, "vector": [0.0]}
    assert Chunk.from_row(stored) == CHUNK
    assert Chunk.from_row({**row, "metadata": None}).metadata == {}
    assert Chunk.from_row({**row, "metadata": CHUNK.metadata}) == CHUNK


def test_a_hit_is_its_chunk_plus_rank_and_scores() -> None:
    hit = Hit.of(CHUNK, 1, 0.123456789, dense=(2, 0.5), bm25=None)
    assert hit.chunk == CHUNK
    assert (hit.text, hit.doc_id, hit.title, hit.page) == ("some text", "d", "A title", 2)
    assert (hit.rank, hit.dense_rank, hit.dense_score, hit.bm25_rank, hit.bm25_score) == (1, 2, 0.5, None, None)
    data = hit.to_dict()
    assert set(data) == {f.name for f in fields(Hit)}
    assert data["score"] == 0.123457 and data["chunk_id"] == "c1" and data["metadata"] == CHUNK.metadata
    json.dumps(data)  # the JSON form is JSON
    # a page that is not a whole number is not a page
    assert Hit.of(Chunk("c", "d", "s", 0, "t", 0, 1, metadata={"page": "2"}), 1, 0.0).page is None
