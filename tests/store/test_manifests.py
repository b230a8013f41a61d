"""Manifest schema versions on every backend: an older manifest is migrated when read (and written back in
the current version by the next write), a newer one is refused with both versions named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nvrag import __version__
from nvrag.errors import ManifestVersionError
from nvrag.schema import MANIFEST_SCHEMA_VERSION
from nvrag.store import LanceStore, Store
from nvrag.store.lancedb_store import MANIFEST_TABLE
from nvrag.store.manifests import MIGRATIONS, migrate, read_manifest
from nvrag.store.sidecar import SidecarStore
from tests.store.test_conformance import BACKENDS, DIM, corpus
from tests.store.test_lancedb_store import manifest


def stored_json(store: Store, key: str) -> dict[str, object]:
    """The manifest row exactly as stored."""
    return json.loads(store._manifest_rows()[key])  # type: ignore[attr-defined]


def write_raw(store: Store, key: str, payload: dict[str, object]) -> None:
    """Put a manifest row into the store as another nvrag would have written it."""
    text = json.dumps(payload)
    if isinstance(store, SidecarStore):
        with store._db:
            store._db.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?)", (key, text))
        return
    assert isinstance(store, LanceStore)
    table = store._db.open_table(MANIFEST_TABLE)
    table.delete(f"name = '{key}'")
    table.add([{"name": key, "manifest": text}])


def version_1(current: dict[str, object]) -> dict[str, object]:
    """The same manifest as the first nvrag releases wrote it: no physical table name, no storage fields."""
    old = {k: v for k, v in current.items() if k not in ("table", "vector_dtype", "quantization", "compute_dtype")}
    return {**old, "schema_version": 1}


def version_2(current: dict[str, object]) -> dict[str, object]:
    """As nvrag wrote it before bfloat16 became a CPU default: no compute_dtype."""
    return {**{k: v for k, v in current.items() if k != "compute_dtype"}, "schema_version": 2}


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_a_version_1_manifest_opens_migrated_and_the_next_write_stores_the_current_version(
    kind: str, tmp_path: Path
) -> None:
    store = BACKENDS[kind](tmp_path / kind)
    chunks, vectors = corpus()
    store.create(manifest(dim=DIM)).upsert(chunks[:10], vectors[:10])
    write_raw(store, "docs", version_1(stored_json(store, "docs")))
    assert stored_json(store, "docs")["schema_version"] == 1

    reopened = BACKENDS[kind](tmp_path / kind)
    table = reopened.open("docs")
    m = table.manifest
    assert (m.schema_version, m.table, m.vector_dtype, m.quantization, m.compute_dtype) == (
        MANIFEST_SCHEMA_VERSION,
        "docs",
        "float32",
        "none",
        "unrecorded",
    )
    assert table.count() == 10  # the rows of the migrated index are all there
    np.testing.assert_allclose(table.search(vectors[3], 1)[0].score, 1.0, atol=1e-5)
    table.set_manifest(m)
    assert stored_json(reopened, "docs")["schema_version"] == MANIFEST_SCHEMA_VERSION
    assert stored_json(reopened, "docs")["table"] == "docs"


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_a_manifest_from_a_newer_nvrag_is_refused_naming_both_versions(kind: str, tmp_path: Path) -> None:
    store = BACKENDS[kind](tmp_path / kind)
    store.create(manifest("docs", dim=DIM))
    store.create(manifest("other", dim=DIM))
    future = MANIFEST_SCHEMA_VERSION + 1
    write_raw(store, "docs", {**stored_json(store, "docs"), "schema_version": future, "a_future_field": True})
    assert store.list_indexes() == ["docs", "other"]  # listing still works
    with pytest.raises(ManifestVersionError) as raised:
        store.open("docs")
    assert str(raised.value) == (
        f"index 'docs' was written by a newer nvrag (manifest schema version {future}; nvrag {__version__} reads "
        f"versions up to {MANIFEST_SCHEMA_VERSION}): upgrade nvrag to use it"
    )
    assert store.open("other").manifest.name == "other"  # the other indexes are unaffected


def test_migrations_are_numbered_from_1_to_the_current_version_and_bad_rows_are_refused() -> None:
    assert sorted(MIGRATIONS) == list(range(1, MANIFEST_SCHEMA_VERSION))
    current = json.loads(manifest(dim=DIM).to_json())
    unrecorded = {**current, "compute_dtype": "unrecorded"}  # the dtype was not written before version 3
    assert migrate(version_1(current), "docs") == unrecorded
    assert migrate(version_2(current), "docs") == unrecorded
    unversioned = {k: v for k, v in version_1(current).items() if k != "schema_version"}
    assert migrate(unversioned, "docs") == unrecorded  # the very first manifests had no version at all
    for bad in (0, "2", None):
        with pytest.raises(ManifestVersionError, match=r"^index 'docs': its manifest has no valid schema version"):
            migrate({**current, "schema_version": bad}, "docs")
    for payload in ("{not json", "[1, 2]", json.dumps({"schema_version": 2})):
        with pytest.raises(ManifestVersionError, match=r"^index 'x': its manifest cannot be read"):
            read_manifest(payload, "x")


def test_the_cli_says_what_to_do_about_a_newer_manifest(tmp_path: Path) -> None:
    from tests.app.test_cli import run

    db = str(tmp_path / "db")
    corpus_file = tmp_path / "docs.jsonl"
    corpus_file.write_text('{"id": "a", "text": "alpha beta"}\n', encoding="utf-8")
    assert run("index", str(corpus_file), "--index", "t", "--model", "nvrag/fake-wordlen", "--db", db)[0] == 0
    store = LanceStore(db)
    write_raw(store, "t", {**stored_json(store, "t"), "schema_version": 9})
    for args in (["search", "alpha", "--index", "t"], ["index", str(corpus_file), "--index", "t"]):
        code, out, err = run(*args, "--db", db)
        assert code == 2 and out == ""
        assert err.strip().splitlines() == [
            f"error: index 't' was written by a newer nvrag (manifest schema version 9; nvrag {__version__} reads "
            f"versions up to {MANIFEST_SCHEMA_VERSION}): upgrade nvrag to use it"
        ]


def test_info_lists_the_other_indexes_and_names_the_unreadable_one(tmp_path: Path) -> None:
    from tests.app.test_cli import run

    db = str(tmp_path / "db")
    corpus_file = tmp_path / "docs.jsonl"
    corpus_file.write_text('{"id": "a", "text": "alpha beta"}\n', encoding="utf-8")
    for name in ("new", "old"):
        assert run("index", str(corpus_file), "--index", name, "--model", "nvrag/fake-wordlen", "--db", db)[0] == 0
    store = LanceStore(db)
    write_raw(store, "new", {**stored_json(store, "new"), "schema_version": 9})
    code, out, _ = run("info", "--json", "--db", db)
    listing = json.loads(out)
    assert code == 0 and [i["manifest"]["name"] for i in listing["indexes"]] == ["old"]
    assert [u["name"] for u in listing["unreadable"]] == ["new"]
    assert "manifest schema version 9" in listing["unreadable"][0]["error"]
    code, out, err = run("info", "--db", db)
    assert code == 0 and "old" in out
    assert "warning: index 'new' was written by a newer nvrag (manifest schema version 9" in err
