"""Property-based fuzzing of every loader: random bytes and random nested structures in each format end as
Documents or reported failures (never an escaping exception), each within a time and memory bound."""

from __future__ import annotations

import io
import json
import random
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvrag.indexer import LoadFailure, load_corpus
from nvrag.schema import Document

SECONDS = 20.0  # per input, generous for a loaded CI machine; the readers' own bounds are far tighter
PYTHON_BYTES = 512 * 2**20  # peak Python allocation per input (the process bound is checked in test_corpus)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)
documents = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=20), st.integers(), st.none(), json_values), "text": json_values},
    optional={"title": json_values, "extra": json_values, "_id": json_values},
)


def load(suffix: str, data: bytes) -> list[Document | LoadFailure]:
    """Load one file of these bytes and check the bounds: every item a Document or a LoadFailure."""
    with tempfile.TemporaryDirectory(prefix="nvrag-fuzz-") as folder:  # removed after each input
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        tracemalloc.start()
        started = time.monotonic()
        try:
            items = list(load_corpus(path))
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert elapsed < SECONDS, (suffix, elapsed)
    assert peak < PYTHON_BYTES, (suffix, peak)
    for item in items:
        assert isinstance(item, Document | LoadFailure)
        if isinstance(item, LoadFailure):
            assert item.reason and "\n" not in item.reason
        else:
            assert isinstance(item.doc_id, str) and item.doc_id and isinstance(item.text, str) and item.text.strip()
            json.dumps(item.metadata)  # storable
    return items


def mutate(data: bytes, seed: int, flips: int = 20) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(flips):
        at = rng.randrange(len(out))
        out[at] = rng.randrange(256)
    if rng.random() < 0.3:
        out = out[: rng.randrange(1, len(out))]
    return bytes(out)


def _pdf() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(text="a page of text to mutate")
    return bytes(pdf.output())


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Heading", level=1)
    document.add_paragraph("a paragraph to mutate")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["one", "two"], "n": [1, 2]}), buffer)
    return buffer.getvalue()


PDF, DOCX, PARQUET = _pdf(), _docx(), _parquet()
SUFFIXES = [".txt", ".md", ".html", ".pdf", ".docx", ".jsonl", ".json", ".csv", ".tsv", ".parquet"]


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=4096))
def test_random_bytes_in_every_format(suffix: str, data: bytes) -> None:
    load(suffix, data)


@FUZZ
@given(suffix=st.sampled_from([".pdf", ".docx", ".parquet"]), seed=st.integers(0, 2**32))
def test_mutated_binary_formats(suffix: str, seed: int) -> None:
    base = {".pdf": PDF, ".docx": DOCX, ".parquet": PARQUET}[suffix]
    load(suffix, mutate(base, seed))


@FUZZ
@given(lines=st.lists(st.one_of(documents, json_values), max_size=8), depth=st.integers(0, 3000))
def test_jsonl_of_random_structures(lines: list[object], depth: int) -> None:
    text = "\n".join(json.dumps(line) for line in lines) + "\n" + "[" * depth + "]" * depth + "\n"
    items = load(".jsonl", text.encode("utf-8"))
    assert len(items) == len([line for line in text.splitlines() if line.strip()])  # one item per line


@FUZZ
@given(value=st.one_of(st.lists(documents, max_size=6), documents, json_values), depth=st.integers(0, 50_000))
def test_json_of_random_structures(value: object, depth: int) -> None:
    load(".json", ("[" * depth + json.dumps(value) + "]" * depth).encode("utf-8"))


yaml_tokens = st.sampled_from(
    ["a", ":", " ", "\n", "- ", "&x ", "*x", "[", "]", "{", "}", "!!python/object ", "'", '"']
)


@FUZZ
@given(front=st.lists(yaml_tokens, max_size=60), body=st.text(max_size=200))
def test_markdown_with_random_front_matter(front: list[str], body: str) -> None:
    load(".md", f"---\n{''.join(front)}\n---\n{body}".encode("utf-8", "surrogatepass"))


tags = st.sampled_from(["<p>", "</p>", "<div>", "</div>", "<script>", "</script>", "<h1>", "</h1>", "<main>", "x "])


@FUZZ
@given(parts=st.lists(st.one_of(tags, st.text(max_size=10)), max_size=200), depth=st.integers(0, 20_000))
def test_html_tag_soup(parts: list[str], depth: int) -> None:
    load(".html", ("<div>" * depth + "".join(parts) + "</div>" * depth).encode("utf-8", "surrogatepass"))


@FUZZ
@given(rows=st.lists(st.lists(st.text(max_size=30), max_size=5), max_size=20), delimiter=st.sampled_from([",", "\t"]))
def test_tables_of_random_cells(rows: list[list[str]], delimiter: str) -> None:
    lines = ["id,text,title".replace(",", delimiter)] + [delimiter.join(row) for row in rows]
    load(".csv" if delimiter == "," else ".tsv", "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(members=st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=512)), max_size=6))
def test_docx_of_random_members(members: list[tuple[str, bytes]]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in dict(members).items():
            if name.replace("\x00", "_") != "word/document.xml":
                archive.writestr(name.replace("\x00", "_"), data)
        archive.writestr("word/document.xml", b"<w:document xmlns:w='x'>" + b"<a>" * 500 + b"</w:document>")
    load(".docx", buffer.getvalue())
