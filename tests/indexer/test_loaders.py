"""Loaders: directories of .txt/.md, JSONL; every bad file or line becomes a one-line failure, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrag.errors import InputError
from nvrag.indexer import LoadFailure, load_corpus, loaders, reading
from nvrag.schema import Document


def split(items: list[Document | LoadFailure]) -> tuple[list[Document], list[LoadFailure]]:
    docs = [i for i in items if isinstance(i, Document)]
    return docs, [i for i in items if isinstance(i, LoadFailure)]


def test_directory_is_read_recursively_in_a_stable_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bravo", encoding="utf-8")
    (tmp_path / "sub" / "a.md").write_text("intro\n# The Title\nbody", encoding="utf-8")
    (tmp_path / "ignored.py").write_text("print()", encoding="utf-8")
    docs, failures = split(list(load_corpus(tmp_path)))
    assert failures == []
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("b.txt", None, "bravo"),
        ("sub/a.md", "The Title", "intro\n# The Title\nbody"),
    ]
    assert docs[0].source == str((tmp_path / "b.txt").resolve())
    assert docs[1].metadata == {"path": "sub/a.md", "format": "md"}


def test_bad_files_are_reported_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "good.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02abc")
    (tmp_path / "empty.md").write_text("  \n", encoding="utf-8")
    (tmp_path / "huge.txt").write_text("x" * 2000, encoding="utf-8")  # one long line over the (lowered) limit
    (tmp_path / "loop-a.txt").symlink_to(tmp_path / "loop-b.txt")
    (tmp_path / "loop-b.txt").symlink_to(tmp_path / "loop-a.txt")
    (tmp_path / "dangling.md").symlink_to(tmp_path / "gone.md")
    (tmp_path / "dirloop").mkdir()
    (tmp_path / "dirloop" / "back").symlink_to(tmp_path, target_is_directory=True)  # not followed
    monkeypatch.setattr(reading, "MAX_FILE_BYTES", 1024)
    docs, failures = split(list(load_corpus(tmp_path)))
    assert [d.doc_id for d in docs] == ["good.txt"]
    reasons = {Path(f.source).name: f.reason for f in failures}
    assert reasons == {
        "binary.txt": "looks binary (NUL bytes); skipped",
        "dangling.md": "No such file or directory",
        "empty.md": "empty file; skipped",
        "huge.txt": "1 KB is over the 1 KB limit for one document; split it into smaller files",
        "loop-a.txt": "Too many levels of symbolic links",
        "loop-b.txt": "Too many levels of symbolic links",
    }


def test_encodings_are_detected(tmp_path: Path) -> None:
    text = "Ceci est un café très agréable à Paris, où l'on déjeune près de la fenêtre. " * 3
    (tmp_path / "latin1.txt").write_bytes(text.encode("latin-1"))
    (tmp_path / "utf16.txt").write_bytes(text.encode("utf-16"))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    docs, failures = split(list(load_corpus(tmp_path)))
    assert failures == []
    assert {d.doc_id: d.text for d in docs} == {"bom.txt": text, "latin1.txt": text, "utf16.txt": text}
    assert {d.doc_id: d.metadata.get("encoding") for d in docs} == {
        "bom.txt": None,
        "latin1.txt": "cp1252",
        "utf16.txt": "utf-16-le",
    }


def test_a_path_that_vanishes_mid_run_is_reported(tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name, encoding="utf-8")
    items = load_corpus(tmp_path)
    first = next(items)
    (tmp_path / "b.txt").unlink()
    second = next(items)
    assert isinstance(first, Document)
    assert isinstance(second, LoadFailure) and second.reason == "No such file or directory"


def test_jsonl_documents_with_title_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "1", "text": "one", "title": "T", "lang": "en"}\n'
        "\n"
        '{"id": 2, "text": "two"}\n'
        "{not json\n"
        '["a list"]\n'
        '{"text": "no id"}\n'
        '{"id": "3", "text": ""}\n',
        encoding="utf-8",
    )
    docs, failures = split(list(load_corpus(path)))
    assert [(d.doc_id, d.text, d.title, d.metadata) for d in docs] == [
        ("1", "one", "T", {"lang": "en"}),
        ("2", "two", None, {}),
    ]
    where = str(path.resolve())
    assert [(f.source, f.reason.split(";")[0]) for f in failures] == [
        (f"{where}:4", "malformed JSON (Expecting property name enclosed in double quotes)"),
        (f"{where}:5", "a line must be a JSON object with 'id' and 'text'"),
        (f"{where}:6", "missing or empty 'id' (a string or integer)"),
        (f"{where}:7", "document 3: missing or empty 'text'"),
    ]


def test_a_hostile_id_is_named_on_one_short_escaped_line(tmp_path: Path) -> None:
    """Found by tests/hostile/test_fuzz.py: an id of a newline made a two-line failure. Ids that are not
    printable, or long, are shown escaped and cut; the failure still carries the id itself."""
    path = tmp_path / "ids.jsonl"
    rows = [{"id": "\n"}, {"id": "a\x1b[31mred"}, {"id": "x" * 5000, "text": " "}, {"id": "plain id", "text": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _, failures = split(list(load_corpus(path)))
    assert [f.reason.split(": missing")[0] for f in failures] == [
        "document '\\n'",
        "document 'a\\x1b[31mred'",
        "document '" + "x" * 80 + "'...",
        "document plain id",
    ]
    assert [f.doc_id for f in failures] == [r["id"] for r in rows]


def test_missing_path_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        list(load_corpus(tmp_path / "nope"))
    exe = tmp_path / "x.exe"
    exe.write_bytes(b"MZ")
    with pytest.raises(InputError, match=r"unsupported file type \.exe; nvrag reads \.csv, \.docx"):
        list(load_corpus(exe))


def test_a_jsonl_line_that_is_not_utf8_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "a", "text": "one"}\n{"id": "b", "text": "caf\xe9"}\n{"id": "c", "text": "three"}\n')
    docs, failures = split(list(load_corpus(path)))
    assert [d.doc_id for d in docs] == ["a", "c"]
    assert failures == [LoadFailure(f"{path}:2", "not valid UTF-8 (byte 24 of the line); line skipped")]


def test_load_units_cut_jsonl_into_blocks_that_read_like_the_whole_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    lines = [f'{{"id": "d{i}", "text": "text {i}"}}' for i in range(10)]
    lines[4] = "{broken"
    (tmp_path / "b.jsonl").write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode("utf-8"))  # with a BOM
    units = loaders.plan_units(tmp_path, jsonl_block_lines=3)
    assert [(Path(u.path).name, u.first_line, u.lines) for u in units] == [
        ("a.txt", 1, None),
        ("b.jsonl", 1, 3),
        ("b.jsonl", 4, 3),
        ("b.jsonl", 7, 3),
        ("b.jsonl", 10, None),
    ]
    blocks = [item for u in units for item in loaders.load_unit(u)]
    assert blocks == list(load_corpus(tmp_path))
    docs, failures = split(blocks)
    assert [d.doc_id for d in docs] == ["a.txt"] + [f"d{i}" for i in range(10) if i != 4]
    assert [f.source.rsplit(":", 1)[1] for f in failures] == ["5"]


def test_excluded_directories_are_not_read_however_they_are_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    data = tmp_path / "db"  # a data directory inside the folder, holding files nvrag would otherwise read
    (data / "uploads").mkdir(parents=True)
    (data / "uploads" / "upload.md").write_text("uploaded", encoding="utf-8")
    (data / "docs.report.json").write_text('{"id": "r", "text": "a run report"}', encoding="utf-8")
    (data / "docs.lance").mkdir()
    (data / "docs.lance" / "0.lance").write_bytes(b"\x00")
    (tmp_path / "db2").mkdir()  # a sibling whose name starts the same is read
    (tmp_path / "db2" / "kept.txt").write_text("kept", encoding="utf-8")
    (tmp_path / "link").symlink_to(data)
    for spelling in (data, tmp_path / "link", tmp_path / "db2" / ".." / "db"):
        units = loaders.plan_units(tmp_path, exclude=(spelling,))
        assert [u.doc_id for u in units] == ["db2/kept.txt", "notes.txt"]
        assert [d.doc_id for d in load_corpus(tmp_path, exclude=(spelling,))] == ["db2/kept.txt", "notes.txt"]
        assert loaders.count_items(tmp_path, exclude=(spelling,)) == 2
        assert loaders.unsupported_files(tmp_path, exclude=(spelling,)) == {}
    assert [u.doc_id for u in loaders.plan_units(tmp_path)] == [
        "db/docs.report.json",
        "db/uploads/upload.md",
        "db2/kept.txt",
        "notes.txt",
    ]
    assert loaders.unsupported_files(tmp_path) == {".lance": 1}
    # the folder itself inside an excluded one (indexing the uploads folder on purpose) is read
    assert [u.doc_id for u in loaders.plan_units(data / "uploads", exclude=(data,))] == ["upload.md"]
