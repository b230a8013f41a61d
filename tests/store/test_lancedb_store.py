"""LanceDB store in a temp dir: manifests, idempotent upserts, deletes, exact cosine search."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nvrag.errors import ConfigError, IndexNotFoundError
from nvrag.schema import Chunk, ChunkerSettings, FilterCondition, IndexManifest
from nvrag.store import LanceStore
from nvrag.store.lancedb_store import LanceTable

DIM = 4


def manifest(name: str = "docs", dim: int = DIM) -> IndexManifest:
    return IndexManifest(
        name=name,
        model="m",
        model_revision="r1",
        dimension=dim,
        normalized=True,
        query_template="",
        document_template="",
        license="MIT",
        chunker=ChunkerSettings(10, 2),
        nvrag_version="0",
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )


def chunk(i: int, doc: str = "d") -> Chunk:
    return Chunk(
        chunk_id=f"c{i}",
        doc_id=doc,
        source=f"/src/{doc}",
        chunk_no=i,
        text=f"text {i}",
        start=i * 10,
        end=i * 10 + 6,
        title=None if i % 2 else f"title {i}",
        metadata={"n": i, "tags": ["x"]},
    )


def unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_create_list_open_drop(store: LanceStore) -> None:
    assert store.list_indexes() == []
    store.create(manifest("b"))
    store.create(manifest("a"))
    assert store.list_indexes() == ["a", "b"]
    assert store.open("a").manifest == manifest("a")
    store.drop("a")
    assert store.list_indexes() == ["b"]
    with pytest.raises(IndexNotFoundError, match=r"no index named 'a' in .* \(indexes: b\)"):
        store.open("a")


def test_manifest_survives_reopening_the_database(tmp_path: Path) -> None:
    LanceStore(str(tmp_path)).create(manifest())
    reopened = LanceStore(str(tmp_path)).open("docs")
    assert reopened.manifest == manifest()
    updated = replace(manifest(), updated_at="2026-02-02T00:00:00+00:00")
    reopened.set_manifest(updated)
    assert LanceStore(str(tmp_path)).open("docs").manifest == updated


def test_names_are_checked_and_unique(store: LanceStore) -> None:
    store.create(manifest())
    with pytest.raises(ConfigError, match="already exists"):
        store.create(manifest())
    for bad in ("", "_hidden", "a/b", "x" * 65, "sp ace"):
        with pytest.raises(ConfigError, match="invalid index name"):
            store.create(manifest(bad))


def test_upsert_is_idempotent_and_round_trips_every_field(store: LanceStore) -> None:
    table = store.create(manifest())
    chunks = [chunk(0), chunk(1)]
    vectors = unit([[1, 0, 0, 0], [0, 1, 0, 0]])
    table.upsert(chunks, vectors)
    table.upsert(chunks, vectors)
    assert table.count() == 2
    assert table.chunk_ids_by_doc() == {"d": {"c0", "c1"}}
    hit = table.search(unit([[1, 0, 0, 0]])[0], 1)[0]
    assert hit.chunk == chunks[0]
    assert hit.score == pytest.approx(1.0, abs=1e-6)


def test_search_is_exact_cosine_against_numpy(store: LanceStore) -> None:
    rng = np.random.default_rng(7)
    vectors = unit(rng.normal(size=(50, DIM)).tolist())
    table = store.create(manifest())
    table.upsert([chunk(i, doc=f"d{i % 5}") for i in range(50)], vectors)
    query = unit(rng.normal(size=(1, DIM)).tolist())[0]
    expected = np.argsort(-(vectors @ query))[:7]
    hits = table.search(query, 7)
    assert [h.chunk.chunk_id for h in hits] == [f"c{i}" for i in expected]
    np.testing.assert_allclose([h.score for h in hits], (vectors @ query)[expected], atol=1e-5)


def test_delete_and_wrong_shapes(store: LanceStore) -> None:
    table = store.create(manifest())
    table.upsert([chunk(0), chunk(1), chunk(2, doc="e")], unit([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
    table.delete(["c1", "c2", "missing"])
    assert table.chunk_ids_by_doc() == {"d": {"c0"}}
    with pytest.raises(ValueError, match=r"expected vectors of shape \(1, 4\)"):
        table.upsert([chunk(5)], unit([[1, 0, 0]]))


def test_ids_with_quotes_are_deleted_safely(store: LanceStore) -> None:
    table = store.create(manifest())
    odd = replace(chunk(0), chunk_id="it's")
    table.upsert([odd, chunk(1)], unit([[1, 0, 0, 0], [0, 1, 0, 0]]))
    table.delete(["it's"])
    assert table.chunk_ids_by_doc() == {"d": {"c1"}}


def test_search_on_an_empty_index_returns_nothing(store: LanceStore) -> None:
    assert store.create(manifest()).search(unit([[1, 0, 0, 0]])[0], 5) == []


def test_a_manifest_whose_table_was_never_created_opens_as_empty(tmp_path: Path) -> None:
    # a crash between writing the manifest and creating the table leaves exactly this state
    store = LanceStore(str(tmp_path))
    store._write_manifest(manifest())
    assert store.open("docs").count() == 0


def test_where_sql_for_columns_metadata_numbers_and_lists() -> None:
    from nvrag.schema import FilterCondition as C
    from nvrag.store.lancedb_store import where_sql

    assert where_sql([]) is None
    assert where_sql([C("lang", "=", "it's"), C("year", ">=", 2020.0), C("kind", "in", ("a", "b"))]) == (
        "json_get_string(metadata, 'lang') = 'it''s' AND "
        "TRY_CAST(json_get_string(metadata, 'year') AS DOUBLE) >= 2020.0 AND "
        "json_get_string(metadata, 'kind') IN ('a', 'b')"
    )
    assert where_sql([C("doc_id", "!=", "x"), C("chunk_no", "<", 2.0)]) == (
        "`doc_id` <> 'x' AND CAST(`chunk_no` AS DOUBLE) < 2.0"
    )


def test_text_search_covers_rows_added_after_the_index(store: LanceStore) -> None:
    table = store.create(manifest())
    table.upsert([replace(chunk(0), text="red apples")], unit([[1, 0, 0, 0]]))
    table.refresh_indexes()
    table.upsert([replace(chunk(1), text="green apples", title=None)], unit([[0, 1, 0, 0]]))
    table.refresh_indexes()
    assert {h.chunk.chunk_id for h in table.text_search("apples", 5)} == {"c0", "c1"}
    assert [h.chunk.chunk_id for h in table.text_search("green", 5)] == ["c1"]
    # titles are searched too: chunk 0 carries "title 0"
    assert [h.chunk.chunk_id for h in table.text_search("title", 5)] == ["c0"]


def test_vectors_by_id(store: LanceStore) -> None:
    table = store.create(manifest())
    vectors = unit([[1, 0, 0, 0], [0, 1, 0, 0]])
    table.upsert([chunk(0), chunk(1)], vectors)
    got = table.vectors(["c1", "nope"])
    assert list(got) == ["c1"]
    np.testing.assert_allclose(got["c1"], vectors[1])


def test_float16_vectors_halve_storage_and_keep_the_ranking(store: LanceStore) -> None:
    rng = np.random.default_rng(9)
    vectors = unit(rng.normal(size=(300, DIM)).tolist())
    half = store.create(replace(manifest("half"), vector_dtype="float16"))
    full = store.create(manifest("full"))
    chunks = [chunk(i, doc=f"d{i}") for i in range(300)]
    half.upsert(chunks, vectors)
    full.upsert(chunks, vectors)
    assert str(half.lancedb_table.schema.field("vector").type) == "fixed_size_list<item: halffloat>[4]"
    agree = 0
    for q in unit(rng.normal(size=(20, DIM)).tolist()):
        a = [h.chunk.chunk_id for h in half.search(q, 10)]
        b = [h.chunk.chunk_id for h in full.search(q, 10)]
        agree += len(set(a) & set(b))
        assert abs(half.search(q, 1)[0].score - full.search(q, 1)[0].score) < 2e-3
    assert agree / 200 >= 0.97


@pytest.mark.parametrize("leftover", ["bare", "empty versions", "a staged version"])
def test_a_table_directory_with_nothing_committed_is_created_over(tmp_path: Path, leftover: str) -> None:
    """A kill -9 while LanceDB creates a table (or a reader looking while another process does) finds its
    directory with no committed version: it opens as the empty index it was becoming, is written, and lists; the
    same for the first manifest table (every other read of that database failed "Dataset ... was not found")."""
    store = LanceStore(str(tmp_path))
    store._write_manifest(manifest("old"))
    wanted = manifest("docs")
    store._write_manifest(wanted)
    for name in (store.manifest("docs").table, "fresh"):
        versions = tmp_path / f"{name}.lance" / "_versions"
        if leftover == "bare":
            versions.parent.mkdir()
        else:
            versions.mkdir(parents=True)
        if leftover == "a staged version":  # a commit's file not yet renamed into place
            (versions / "18446744073709551614.manifest#1").write_bytes(b"partial")
    table = store.open("docs")
    assert table.count() == 0
    table.upsert([chunk(1)], unit([[1, 0, 0, 0]]))
    again = LanceStore(str(tmp_path)).open("docs")
    assert again.count() == 1 and [h.chunk.chunk_id for h in again.search(unit([[1, 0, 0, 0]])[0], 5)] == ["c1"]
    store.create(manifest("fresh"))  # a ghost under the name of a new index is no foreign table
    assert store.list_indexes() == ["docs", "fresh", "old"] and store.open("fresh").count() == 0


def test_a_manifest_table_directory_with_nothing_committed_is_created_over(tmp_path: Path) -> None:
    (tmp_path / "_nvrag_manifests.lance" / "_versions").mkdir(parents=True)  # killed creating the first index
    store = LanceStore(str(tmp_path))
    assert store.list_indexes() == []
    store.create(manifest("docs")).upsert([chunk(1)], unit([[1, 0, 0, 0]]))
    assert LanceStore(str(tmp_path)).list_indexes() == ["docs"] and store.open("docs").count() == 1


def test_a_manifest_table_still_being_created_reads_as_no_index(tmp_path: Path) -> None:
    # another process has made the directory of the first manifest table but not committed it yet
    (tmp_path / "_nvrag_manifests.lance").mkdir()
    store = LanceStore(str(tmp_path))
    assert store.list_indexes() == [] and not store.exists("docs")


def test_binary_quantisation_stores_sign_bits_and_rescores_with_the_full_vectors(store: LanceStore) -> None:
    table = store.create(replace(manifest("bin", dim=8), quantization="binary"))
    assert isinstance(table, LanceTable)
    # y matches the query's signs exactly (Hamming 0) but points elsewhere; x differs in one sign (Hamming 1)
    # and is far closer: the bits alone would rank y first, the rescoring ranks x first
    x = [1, 1, 1, 1, 1, 1, 1, -1e-3]
    y = [1, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3]
    z = [-1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]
    vectors = unit([x, y, z])
    table.upsert([chunk(0, "x"), chunk(1, "y"), chunk(2, "z")], vectors)
    bits = table.lancedb_table.to_arrow().column("bits").to_pylist()
    assert str(table.lancedb_table.schema.field("bits").type) == "fixed_size_list<item: uint8>[1]"
    assert bits == [[0b11111110], [0b11111111], [0b00101010]]
    q = unit([[1] * 8])[0]
    hits = table.search(q, 2)
    assert [h.chunk.doc_id for h in hits] == ["x", "y"]
    np.testing.assert_allclose([h.score for h in hits], vectors[:2] @ q, rtol=1e-6)
    assert [h.chunk.doc_id for h in table.search(q, 3, [FilterCondition("doc_id", "!=", "x")])] == ["y", "z"]


def test_binary_quantisation_recall_against_exact_search(store: LanceStore) -> None:
    # Embeddings have structure: a query's neighbours stand out from the rest. 300 topics of 20 chunks each:
    # every true top-10 is among the query topic's 20 chunks, found by Hamming distance and ordered by the
    # rescoring. (On unstructured random vectors the neighbours beyond the first are near-ties that sign bits
    # cannot order; docs/performance.md measures that worst case.)
    rng = np.random.default_rng(3)
    dim, topics, per = 128, 300, 20
    centers = rng.normal(size=(topics, dim))
    vectors = unit((np.repeat(centers, per, axis=0) + 0.5 * rng.normal(size=(topics * per, dim))).tolist())
    n = len(vectors)
    chunks = [chunk(i, doc=f"d{i}") for i in range(n)]
    binary = store.create(replace(manifest("bin", dim=dim), quantization="binary"))
    exact = store.create(manifest("exact", dim=dim))
    binary.upsert(chunks, vectors)
    exact.upsert(chunks, vectors)
    queries = unit((centers[:20] + 0.5 * rng.normal(size=(20, dim))).tolist())

    def recall() -> float:
        found = 0
        for q in queries:
            truth = {h.chunk.chunk_id for h in exact.search(q, 10)}
            found += len(truth & {h.chunk.chunk_id for h in binary.search(q, 10)})
        return found / 200

    flat = recall()
    assert flat >= 0.95, flat
    assert binary.build_ann("ivf-pq").startswith("binary index: IVF over the sign bits")
    assert isinstance(binary, LanceTable)
    assert any("bits" in index.columns for index in binary.lancedb_table.list_indices())
    indexed = recall()
    assert indexed >= 0.95, indexed
    top = binary.search(vectors[7], 1)[0]
    assert top.chunk.chunk_id == "c7" and top.score == pytest.approx(1.0, abs=1e-6)


def test_reads_through_lance_equal_lancedbs_own_queries(store: LanceStore) -> None:
    """The store reads with pylance; LanceDB's query builder on the same table must rank and score the same."""
    import lancedb

    rng = np.random.default_rng(3)
    words = ["red", "green", "blue", "apples", "pears", "river", "stone", "light"]
    chunks = [
        replace(chunk(i, doc=f"d{i % 5}"), text=" ".join(rng.choice(words, size=6)), title=f"{words[i % 8]} notes")
        for i in range(40)
    ]
    table = store.create(manifest())
    table.upsert(chunks, unit(rng.normal(size=(40, DIM)).tolist()))
    table.refresh_indexes()
    theirs = lancedb.connect(store.uri).open_table("docs")
    where = [FilterCondition("doc_id", "in", ("d1", "d3")), FilterCondition("n", ">=", 4.0)]
    predicate = "`doc_id` IN ('d1', 'd3') AND TRY_CAST(json_get_string(metadata, 'n') AS DOUBLE) >= 4.0"
    for q in unit(rng.normal(size=(3, DIM)).tolist()):
        ours = [(h.chunk.chunk_id, h.score) for h in table.search(q, 7, where)]
        rows = theirs.search(q).distance_type("cosine").where(predicate, prefilter=True).limit(7).to_list()
        assert [c for c, _ in ours] == [r["chunk_id"] for r in rows]
        assert len(ours) == 7
        np.testing.assert_allclose([s for _, s in ours], [1 - r["_distance"] for r in rows], atol=1e-6)
    for text in ("apples", "green river", "notes stone"):
        ours = [(h.chunk.chunk_id, h.score) for h in table.text_search(text, 5)]
        rows = theirs.search(text, query_type="fts", fts_columns=["title", "text"]).limit(5).to_list()
        assert [c for c, _ in ours] == [r["chunk_id"] for r in rows]
        assert [s for _, s in ours] == pytest.approx([r["_score"] for r in rows])
        assert ours


def test_reads_see_this_process_writes(store: LanceStore) -> None:
    table = store.create(manifest())
    assert table.count() == 0
    table.upsert([chunk(0), chunk(1)], unit([[1, 0, 0, 0], [0, 1, 0, 0]]))
    assert table.count() == 2
    table.delete(["c0"])
    assert [c.chunk_id for c in table.get(["c0", "c1"])] == ["c1"]
    assert [h.chunk.chunk_id for h in table.search(unit([[1, 0, 0, 0]])[0], 5)] == ["c1"]


def test_a_reader_opening_an_index_the_writer_is_creating_does_not_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer records the manifest, then creates the table; a reader opening the index in between creates
    the empty table itself. Whichever of the two creates it second must not fail ("already exists")."""
    writer = LanceStore(str(tmp_path / "db"))
    writer.create(manifest("docs"))  # manifest and table
    reader = LanceStore(str(tmp_path / "db"))
    stale = reader.manifest("docs")
    real, looks = reader._tables, []

    def tables() -> set[str]:  # its first look came before the writer's table existed
        looks.append(1)
        return set() if len(looks) == 1 else real()

    import lance

    created = lance.dataset(writer.dataset_uri(stale.table)).version
    monkeypatch.setattr(reader, "_tables", tables)
    table = reader._open_table(stale, "docs")  # it tries to create the table, and finds the writer's
    assert table.count() == 0 and looks == [1] and lance.dataset(table.uri).version == created


def test_a_text_search_without_a_full_text_index_scans_and_writes_nothing(store: LanceStore) -> None:
    """A read never builds an index (it would write without the index's lock, racing its writer): with no
    full-text index, Lance scores a flat scan; the dataset is left at its version, still unindexed."""
    import lance

    table = store.create(manifest())
    table.upsert(
        [replace(chunk(0), text="red apples"), replace(chunk(1), text="green pears")],
        unit([[1, 0, 0, 0], [0, 1, 0, 0]]),
    )
    version = lance.dataset(table.uri).version
    reader = LanceStore(store.uri).open("docs")
    assert [h.chunk.chunk_id for h in reader.text_search("pears", 5)] == ["c1"]
    after = lance.dataset(table.uri)
    assert after.version == version and not after.describe_indices()


def test_new_tables_use_the_faster_file_format_and_older_ones_keep_theirs(
    store: LanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nvrag.store import lance_ops

    assert str(store.create(manifest("new")).dataset.data_storage_version) == lance_ops.LANCE_FILE_VERSION
    monkeypatch.setattr(lance_ops, "LANCE_FILE_VERSION", "2.2")  # a table made by lancedb 0.40's default
    old = store.create(manifest("old"))
    old.upsert([chunk(0)], unit([[1, 0, 0, 0]]))
    monkeypatch.undo()
    reopened = LanceStore(store.uri).open("old")
    reopened.upsert([chunk(1)], unit([[0, 1, 0, 0]]))
    writer = reopened.writer()  # the distributed path writes fragments, in the table's own format
    writer.commit([writer.stager()([chunk(2)], unit([[0, 0, 1, 0]]))])
    writer.finish()
    table = LanceStore(store.uri).open("old")
    assert str(table.dataset.data_storage_version) == "2.2"
    assert [table.search(v, 1)[0].chunk.chunk_id for v in unit([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])] == [
        "c0",
        "c1",
        "c2",
    ]
