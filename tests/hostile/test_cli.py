"""The real CLI against hostile text and user mistakes: nothing from data reaches the terminal as markup or
escape sequences, and every mistake on a path or option is one line with its documented exit code."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.hostile.conftest import Run, no_traceback, nvrag

pytestmark = pytest.mark.slow
FAKE = "nvrag/fake-wordlen"
AS_A_USER = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()
HOSTILE = [
    {"id": "[bold]id[/bold]", "text": "closing tag [/] crashes naive markup"},
    {"id": "link", "text": "see [link=https://evil.example]click me[/link] and [red]red[/red] now"},
    {
        "id": "esc\x1b[2Jclear",
        "text": "escape \x1b]8;;https://evil.example\x1b\\hyperlink\x1b]8;;\x1b\\ and \x1b[31mred",
    },
    {"id": "bidi", "text": "reversed \u202etxt.exe\u202c and a bell \x07 and a backspace \x08"},
]


def one_error_line(run: Run) -> str:
    no_traceback(run)
    lines = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("model: ")]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_documents_ids_and_queries_are_shown_as_text(tmp_path: Path) -> None:
    corpus = tmp_path / "hostile.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in HOSTILE), encoding="utf-8")
    db = tmp_path / "db"
    assert nvrag("index", str(corpus), "--index", "h", "--model", FAKE, db=db).returncode == 0
    for query in ("[/] closing tag", "[link=https://evil.example]x[/link]", "markup \x1b[31m"):
        run = nvrag("search", query, "--index", "h", "-k", "4", db=db)
        no_traceback(run)
        assert run.returncode == 0, run.stderr
        assert "\x1b" not in run.stdout + run.stderr and "\u202e" not in run.stdout
        assert "\x07" not in run.stdout and "\x08" not in run.stdout
    shown = nvrag("search", "[/] anything", "--index", "h", "-k", "4", db=db).stdout
    flat = " ".join(shown.split())
    for visible in ("[/]", "[link=https://evil.example]", "[bold]id[/bold]", "\\x1b[2Jclear", "\\u202etxt", "[red]"):
        assert visible in flat, (visible, shown)
    assert "hits for '[/] anything'" in flat


def test_failure_lines_show_hostile_file_names_as_text(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("fine", encoding="utf-8")
    (corpus / "[red]bad\x1b[2J.txt").write_bytes(b"\x00binary")
    run = nvrag("index", str(corpus), "--index", "h", "--model", FAKE, db=tmp_path / "db")
    no_traceback(run)
    assert run.returncode == 1
    assert "\x1b" not in run.stderr
    assert f"skipped {corpus}/[red]bad\\x1b[2J.txt: looks binary (NUL bytes); skipped" in run.stderr.splitlines()


def test_db_that_is_a_file_or_below_one(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory", encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("text", encoding="utf-8")
    for db, expected in (
        (afile, f"error: --db {afile}: exists and is not a directory; give a directory"),
        (afile / "sub", f"error: --db {afile}/sub: cannot create the data directory (Not a directory); choose"),
    ):
        for args in (("index", str(corpus), "--model", FAKE), ("search", "x"), ("info",)):
            run = nvrag(*args, "--db", str(db), db=tmp_path / "unused")
            assert run.returncode == 2
            assert one_error_line(run).startswith(expected)


def test_unwritable_data_directory(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("text", encoding="utf-8")
    db = tmp_path / "db"
    assert nvrag("index", str(corpus), "--index", "t", "--model", FAKE, db=db).returncode == 0
    db.chmod(0o555)  # the data directory read-only, the index's own folder not: the run writes, its report cannot
    try:
        more = tmp_path / "e.txt"
        more.write_text("even more text", encoding="utf-8")
        partly = nvrag("index", str(more), "--index", "t", db=db, prefix=AS_A_USER)
        assert partly.returncode == 3, partly.stderr
        assert (
            partly.stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"error: index 't' was written, but its run report could not be written to {db}/t.report.json "
                "(Permission denied)"
            )
        )
    finally:
        db.chmod(0o755)
    everything = [db, *db.rglob("*")]
    for path in everything:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        changed = tmp_path / "d.txt"
        changed.write_text("more text", encoding="utf-8")
        run = nvrag("index", str(changed), "--index", "t", db=db, prefix=AS_A_USER)
        assert run.returncode == 5  # the data directory cannot be written
        assert one_error_line(run) == (
            f"error: the data directory {db} cannot be written by this user (Permission denied): make it writable "
            "(or choose another --db), then run the same command again; it continues where it stopped"
        )
        found = nvrag("search", "text", "--index", "t", "--json", db=db, prefix=AS_A_USER)  # reading still works
        assert found.returncode == 0 and {h["doc_id"] for h in json.loads(found.stdout)} == {"c.txt", "e.txt"}
    finally:
        for path in everything:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_report_that_cannot_be_written_is_its_own_error(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("text", encoding="utf-8")
    db = tmp_path / "db"
    (db / "t.report.json").mkdir(parents=True)  # the report's path is taken by a directory
    run = nvrag("index", str(corpus), "--index", "t", "--model", FAKE, db=db)
    assert run.returncode == 3
    no_traceback(run)
    summary, line = run.stderr.strip().splitlines()[-2:]
    assert summary.startswith("index 't' created: 1 documents, 1 chunks added")
    assert line.startswith(f"error: index 't' was written, but its run report could not be written to {db}/t.report")
    assert nvrag("search", "text", "--index", "t", db=db).returncode == 0  # the index is there


def test_option_mistakes_are_one_line(tmp_path: Path) -> None:
    db = tmp_path / "db"
    cases = [
        (("search", "x", "--rrf-k", "-1"), "error: Invalid value for '--rrf-k': Input should be greater than or equal"),
        (("search", "x", "-k", "0"), "error: Invalid value for '-k' / '--top-k'"),
        (("index", "--bogus"), "error: No such option: --bogus (see: nvrag index --help)"),
        (  # what `index` and `search` take, given to a command whose argument is the index
            ("documents", "--index", "t"),
            "error: No such option: --index; this command takes the index as its first argument: nvrag documents "
            "NAME (see: nvrag documents --help)",
        ),
        (("info", "-i", "t"), "error: No such option: -i (see: nvrag info --help)"),
        (("embed", "hi", "--model", FAKE, "--output", str(tmp_path / "missing" / "v.npy")), "error: --output"),
        (("index", str(tmp_path / "nowhere")), f"error: {tmp_path / 'nowhere'}: no such file or directory"),
        (("search", "x", "--index", "nope"), "error: no index named 'nope'"),
    ]
    for args, start in cases:
        run = nvrag(*args, db=db)
        assert run.returncode == 2, (args, run.stderr)
        assert one_error_line(run).startswith(start), (args, run.stderr)


def test_a_table_killed_while_lancedb_created_it_does_not_strand_the_index(tmp_path: Path) -> None:
    """A kill -9 between nvrag recording a new index and LanceDB committing its table's first version leaves the
    table's directory with nothing committed (here: the state rebuilt from a finished run). The next run must
    index into it, not fail "Dataset ... was not found" for ever."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "alpha beta gamma"}) + "\n", encoding="utf-8")
    db = tmp_path / "db"
    assert nvrag("index", str(corpus), "--index", "t", "--model", FAKE, db=db).returncode == 0
    (table,) = [p for p in db.iterdir() if p.name.endswith(".lance") and not p.name.startswith("_nvrag")]
    for leftover in [p for p in table.iterdir() if p.name != "data"]:  # no version, no transaction: a bare start
        shutil.rmtree(leftover)
    run = nvrag("index", str(corpus), "--index", "t", db=db)
    no_traceback(run)
    assert run.returncode == 0, run.stderr
    found = nvrag("search", "alpha", "--index", "t", "--json", db=db)
    assert found.returncode == 0 and [h["doc_id"] for h in json.loads(found.stdout)] == ["a"]
