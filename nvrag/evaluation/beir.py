"""BEIR-format datasets: corpus.jsonl (_id, title, text), queries.jsonl (_id, text), qrels/SPLIT.tsv."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nvrag.errors import DatasetError
from nvrag.indexer import reading


@dataclass
class Dataset:
    name: str
    corpus: Path
    queries: dict[str, str]  # only the queries judged in the split, in file order
    qrels: dict[str, dict[str, int]]  # query id → doc id → relevance
    skipped: list[str] = field(default_factory=list)  # one line per documented skip


def load_dataset(folder: Path, split: str = "test") -> Dataset:
    """Read a BEIR dataset folder; missing files and malformed lines are DatasetErrors naming file and line."""
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: not a directory; give a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)"
        )
    corpus, queries_file, qrels_file = (
        folder / "corpus.jsonl",
        folder / "queries.jsonl",
        folder / "qrels" / f"{split}.tsv",
    )
    for required in (corpus, queries_file):
        if not required.exists():  # present but not a regular file: the reader says what it is
            raise DatasetError(f"{folder}: no {required.name}; a BEIR dataset has corpus.jsonl and queries.jsonl")
    if not qrels_file.exists():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DatasetError(
            f"{folder}: no qrels/{split}.tsv (splits present: {', '.join(found) or 'none'}); choose one with --split"
        )
    qrels = _read_qrels(qrels_file)
    all_queries = _read_queries(queries_file)
    skipped: list[str] = []
    missing = [q for q in qrels if q not in all_queries]
    for q in missing:
        del qrels[q]
    if missing:
        skipped.append(f"{len(missing)} judged queries are not in queries.jsonl and were skipped (e.g. {missing[0]})")
    if not qrels:
        raise DatasetError(f"{qrels_file}: no judged query is in queries.jsonl; nothing to evaluate")
    queries = {q: text for q, text in all_queries.items() if q in qrels}
    unjudged = len(all_queries) - len(queries)
    if unjudged:
        skipped.append(f"{unjudged} queries have no judgements in the {split} split and were not run")
    return Dataset(name=folder.name, corpus=corpus, queries=queries, qrels=qrels, skipped=skipped)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a dataset file, read with the corpus readers' limits (a regular file, lines of at
    most reading.MAX_LINE_BYTES, UTF-8); a line that breaks one is a DatasetError naming it."""
    try:
        handle = reading.open_regular(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DatasetError(f"{path}: cannot read it ({reason})") from None
    with handle:
        for number, raw in enumerate(reading.bounded_lines(handle), start=1):
            if raw is None:
                raise DatasetError(f"{path}:{number}: line longer than {reading.human_bytes(reading.MAX_LINE_BYTES)}")
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid UTF-8 (byte {exc.start} of the line)") from None


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        parts = line.rstrip("\r\n").split("\t")
        if not line.strip() or (number == 1 and parts[0] == "query-id"):
            continue
        if len(parts) != 3:
            raise DatasetError(
                f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line.strip()[:80]!r}"
            )
        try:
            score = int(float(parts[2]))
        except (ValueError, OverflowError):
            raise DatasetError(f"{path}:{number}: score {parts[2][:40]!r} is not a number") from None
        qrels.setdefault(parts[0], {})[parts[1]] = score
    if not qrels:
        raise DatasetError(f"{path}: no judgements")
    return qrels


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = reading.loads_json(line)
            queries[str(obj["_id"])] = str(obj["text"])
        except (ValueError, KeyError, TypeError) as exc:  # malformed or too deeply nested JSON, missing keys
            raise DatasetError(f"{path}:{number}: expected a JSON object with '_id' and 'text' ({exc})") from None
    return queries
