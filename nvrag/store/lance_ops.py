"""The LanceDB table operations the store writes with, done through pylance (Lance's own library).

A LanceDB table is a Lance dataset (``name.lance`` in the database directory) and LanceDB runs the same Lance
engine, so these write what LanceDB would (tests/store/test_lance_ops.py opens the result with lancedb). They
exist because importing lancedb costs 1.3 s more than pylance (its namespace client's pydantic models), paid by
every ``nvrag index``, ``delete`` or ``drop``; lancedb is imported only for vector-index builds and for listing
an object store's tables.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import lance
import pyarrow as pa

# full-text analysis: English (lower case, ASCII folding, stop words, stemming), close to the BM25 setups BEIR
# reports; the rest of Lance's inverted-index parameters keep their defaults, as LanceDB's FTS config leaves them
FTS_PARAMS: dict[str, Any] = {
    "language": "English",
    "stem": True,
    "remove_stop_words": True,
    "ascii_folding": True,
    "lower_case": True,
}
# Lance file format of new tables: 2.1 fetches a search's hit rows (random access to small columns) about 5x
# faster than 2.2, lancedb 0.40's default (10 rows x 8 columns of a 1M-row table: 1.0 vs 5.0 ms; the
# writers follow whatever version a table has, so older tables keep working)
LANCE_FILE_VERSION: Final = "2.1"
KEEP_VERSIONS = timedelta(days=7)  # LanceDB's optimize() default: versions superseded for longer are removed


def create(uri: str, schema: pa.Schema) -> bool:
    """Create the empty dataset ``uri`` (Lance file format LANCE_FILE_VERSION); False when one was committed there
    first (another process, or a reader racing its writer). A directory with nothing committed (a kill -9
    mid-create) is created over."""
    empty = schema.empty_table()
    try:
        lance.write_dataset(empty, uri, schema=schema, mode="create", data_storage_version=LANCE_FILE_VERSION)
    except OSError as exc:
        if "already exists" not in str(exc):
            raise
        return False
    return True


def merge(uri: str, key: str, rows: pa.Table, delete_where: str | None = None) -> None:
    """Upsert ``rows`` on ``key`` into the latest version, in one commit that also deletes the stored rows that
    ``delete_where`` selects and no row of ``rows`` matches."""
    builder = lance.dataset(uri).merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
    if delete_where is not None:
        builder = builder.when_not_matched_by_source_delete(delete_where)
    builder.execute(rows)


def delete(uri: str, where: str) -> None:
    """Delete the rows ``where`` selects from the latest version, in one commit."""
    lance.dataset(uri).delete(where)


def index_text(uri: str, columns: list[str]) -> None:
    """(Re)build the full-text index of each of ``columns``."""
    dataset = lance.dataset(uri)
    for column in columns:
        dataset.create_scalar_index(column, index_type="INVERTED", replace=True, **FTS_PARAMS)


def drop_indexes(uri: str, columns: set[str]) -> None:
    """Drop every index over any of ``columns``."""
    dataset = lance.dataset(uri)
    for index in dataset.describe_indices():
        if columns & set(index.field_names):
            dataset.drop_index(index.name)


def optimize(uri: str) -> None:
    """What LanceDB's ``Table.optimize()`` does: compact small fragments, remove versions superseded more than
    KEEP_VERSIONS ago, and fold the rows added since each index was built into it."""
    dataset = lance.dataset(uri)
    dataset.optimize.compact_files()
    dataset.cleanup_old_versions(older_than=KEEP_VERSIONS, error_if_tagged_old_versions=False)
    dataset.optimize.optimize_indices()


def drop(uri: str) -> None:
    """Remove the dataset ``uri`` and its files."""
    lance.LanceDataset.drop(uri)
