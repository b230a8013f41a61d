"""A hostile evaluation dataset: each bad file is one DatasetError naming the file and line, never a hang or a
traceback (queries and qrels are read with the corpus readers' limits)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nvrag.errors import DatasetError
from nvrag.evaluation.beir import load_dataset


def dataset(root: Path, queries: bytes | None = None, qrels: bytes | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "a document"}) + "\n", encoding="utf-8")
    default_queries = (json.dumps({"_id": "q1", "text": "a query"}) + "\n").encode()
    (root / "queries.jsonl").write_bytes(default_queries if queries is None else queries)
    (root / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td1\t1\n" if qrels is None else qrels)
    return root


def test_a_good_dataset_loads(tmp_path: Path) -> None:
    assert load_dataset(dataset(tmp_path)).qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("queries", "qrels", "message"),
    [
        (
            b"[" * 100_000 + b"]" * 100_000 + b"\n",
            None,
            "queries.jsonl:1: expected a JSON object with '_id' and 'text'",
        ),
        (b"\xff\xfe bad\n", None, "queries.jsonl:1: not valid UTF-8"),
        (b'{"_id": "q1", "text": "' + b"x" * (5 * 2**20) + b'"}\n', None, "queries.jsonl:1: line longer than 4 MB"),
        (None, b"q1\td1\t1e999999\n", "test.tsv:1: score '1e999999' is not a number"),
        (None, b"q1\td1\n", "test.tsv:1: expected 'query-id<TAB>corpus-id<TAB>score'"),
    ],
)
def test_bad_files_are_one_clear_error(
    tmp_path: Path, queries: bytes | None, qrels: bytes | None, message: str
) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset(dataset(tmp_path, queries, qrels))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_fifo_in_place_of_a_file_does_not_block(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    (root / "queries.jsonl").unlink()
    os.mkfifo(root / "queries.jsonl")
    with pytest.raises(DatasetError, match="a named pipe"):
        load_dataset(root)
