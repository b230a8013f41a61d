"""The store writes LanceDB tables through pylance (lance_ops): what it writes is what LanceDB itself reads and
would have written. Checked with real lancedb and lance in temp directories."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import lance
import lancedb
import pyarrow as pa
import pytest
from lancedb.index import FTS

from nvrag.store import LanceStore, lance_ops
from nvrag.store.lance_ops import LANCE_FILE_VERSION
from nvrag.store.lancedb_store import MANIFEST_TABLE
from tests.store.test_lancedb_store import chunk, manifest, unit


def _texts(n: int, start: int = 0) -> pa.Table:
    words = ["apples", "pears", "running foxes", "a café in Zürich", "the rivers ran"]
    rows = range(start, start + n)
    return pa.table({"chunk_id": [f"c{i}" for i in rows], "text": [words[i % len(words)] for i in rows]})


def test_lancedb_opens_reads_and_searches_what_the_store_wrote(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path))
    table = store.create(manifest())
    rows = [replace(chunk(0), text="red apples"), replace(chunk(1), text="green pears")]
    table.upsert(rows, unit([[1, 0, 0, 0], [0, 1, 0, 0]]))
    table.refresh_indexes()
    table.replace([replace(chunk(2), text="running foxes")], unit([[1, 1, 0, 0]]), replaced={"c1"})
    table.refresh_indexes()  # the rows since folded into the full-text index (optimize)
    db = lancedb.connect(str(tmp_path))
    assert sorted(db.list_tables().tables) == sorted([MANIFEST_TABLE, manifest().table])
    opened = db.open_table(manifest().table)
    assert sorted(opened.to_arrow()["chunk_id"].to_pylist()) == ["c0", "c2"]
    assert [r["chunk_id"] for r in opened.search("run", query_type="fts", fts_columns="text").to_list()] == ["c2"]
    assert {i.name: i.index_type for i in opened.list_indices()} == {"title_idx": "FTS", "text_idx": "FTS"}
    assert opened.index_stats("text_idx").num_unindexed_rows == 0
    names = db.open_table(MANIFEST_TABLE).to_arrow()["name"].to_pylist()
    assert names == [manifest().name]


def test_the_full_text_index_is_the_one_lancedb_builds_from_the_same_settings(tmp_path: Path) -> None:
    """Same analysis (English, stemming, stop words, ASCII folding, lower case), the rest Lance's defaults."""
    schema = pa.schema([pa.field("chunk_id", pa.string()), pa.field("text", pa.string())])
    ours = str(tmp_path / "ours.lance")
    assert lance_ops.create(ours, schema)
    lance_ops.merge(ours, "chunk_id", _texts(5))
    lance_ops.index_text(ours, ["text"])
    theirs = lancedb.connect(str(tmp_path)).create_table("theirs", _texts(5), data_storage_version=LANCE_FILE_VERSION)
    theirs.create_index("text", config=FTS(**lance_ops.FTS_PARAMS), replace=True)

    def params(uri: str) -> dict[str, object]:
        return dict(lance.dataset(uri).stats.index_stats("text_idx")["indices"][0]["params"])

    assert params(ours) == params(str(tmp_path / "theirs.lance"))
    found = lance.dataset(ours).to_table(full_text_query={"query": "zurich cafe", "columns": ["text"]})
    assert found["chunk_id"].to_pylist() == ["c3"]  # folded and lower-cased
    assert lance.dataset(ours).data_storage_version == LANCE_FILE_VERSION


def test_merge_upserts_on_the_key_and_deletes_in_the_same_commit(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("chunk_id", pa.string()), pa.field("text", pa.string())])
    uri = str(tmp_path / "t.lance")
    lance_ops.create(uri, schema)
    lance_ops.merge(uri, "chunk_id", _texts(3))
    before = lance.dataset(uri).version
    changed = pa.table({"chunk_id": ["c1", "c9"], "text": ["changed", "new"]})
    lance_ops.merge(uri, "chunk_id", changed, delete_where="chunk_id IN ('c0')")
    dataset = lance.dataset(uri)
    assert dataset.version == before + 1
    assert dict(zip(*dataset.to_table().to_pydict().values(), strict=True)) == {
        "c1": "changed",
        "c2": "running foxes",
        "c9": "new",
    }


def test_create_is_once_and_takes_over_a_directory_with_nothing_committed(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("name", pa.string())])
    uri = tmp_path / "t.lance"
    (uri / "_versions").mkdir(parents=True)  # what a kill -9 inside creation leaves
    assert lance_ops.create(str(uri), schema)
    lance_ops.merge(str(uri), "name", pa.table({"name": ["kept"]}))
    assert not lance_ops.create(str(uri), schema)  # a second creator finds it, keeps its rows
    assert lance.dataset(str(uri)).to_table()["name"].to_pylist() == ["kept"]
    lance_ops.drop(str(uri))
    assert not uri.exists()


def test_optimize_does_what_lancedb_optimize_does_and_keeps_a_week_of_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same writes, then lance_ops.optimize on one table and LanceDB's optimize() on its twin: the same
    fragments (small ones compacted), every row in the full-text index, superseded versions kept."""
    schema = pa.schema([pa.field("chunk_id", pa.string()), pa.field("text", pa.string())])
    ours, theirs = str(tmp_path / "ours.lance"), str(tmp_path / "theirs.lance")
    for uri in (ours, theirs):
        lance_ops.create(uri, schema)
        lance_ops.merge(uri, "chunk_id", _texts(5))
        lance_ops.index_text(uri, ["text"])
        for start in (5, 10, 15):
            lance_ops.merge(uri, "chunk_id", _texts(5, start))
        lance_ops.delete(uri, "chunk_id IN ('c16', 'c17', 'c18')")
    assert len(lance.dataset(ours).get_fragments()) == 4
    lance_ops.optimize(ours)
    lancedb.connect(str(tmp_path)).open_table("theirs").optimize()

    def state(uri: str) -> tuple[object, ...]:
        dataset = lance.dataset(uri)
        stats = dataset.stats.index_stats("text_idx")
        rows = sorted(dataset.to_table()["chunk_id"].to_pylist())
        return len(dataset.get_fragments()), stats["num_indexed_rows"], stats["num_unindexed_rows"], rows

    assert state(ours) == state(theirs)
    assert state(ours)[0] < 4 and state(ours)[2] == 0
    assert len(lance.dataset(ours).versions()) > 2  # superseded this minute: kept (LanceDB's 7 days)
    monkeypatch.setattr(lance_ops, "KEEP_VERSIONS", timedelta(0))
    lance_ops.optimize(ours)  # a week is the only thing between a version and its removal
    latest = lance.dataset(ours)
    assert [v["version"] for v in latest.versions()] == [latest.version]


def test_a_database_at_a_uri_takes_the_object_store_paths_and_works(tmp_path: Path) -> None:
    """A ``file://`` URI is not a local path to the store: it lists tables through lancedb, as on an object
    store, and creates, writes, indexes and drops through pylance at the URI (no object store here to test)."""
    uri = f"file://{tmp_path}/db"
    store = LanceStore(uri)
    assert store.local_dir() is None
    table = store.create(manifest())
    table.upsert([replace(chunk(0), text="red apples"), chunk(1)], unit([[1, 0, 0, 0], [0, 1, 0, 0]]))
    table.refresh_indexes()
    reopened = LanceStore(uri).open("docs")
    assert store.list_indexes() == ["docs"] and reopened.count() == 2
    assert [h.chunk.chunk_id for h in reopened.text_search("apple", 5)] == ["c0"]
    assert [h.chunk.chunk_id for h in reopened.search(unit([[0, 1, 0, 0]])[0], 1)] == ["c1"]
    reopened.delete(["c1"])
    assert LanceStore(uri).open("docs").count() == 1
    store.drop("docs")
    assert LanceStore(uri).list_indexes() == [] and not (tmp_path / "db" / f"{manifest().table}.lance").exists()
