"""The README's Python example runs as written and finds the README's expected top hit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_readme_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "demo").mkdir(parents=True)
    (tmp_path / "data" / "demo" / "stdlib.jsonl").symlink_to(REPO / "data" / "demo" / "stdlib.jsonl")
    exec(compile(block, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3][0] == "1" and lines[1].split()[2] == "hashlib.file_digest"
    assert (tmp_path / "nvrag-db" / "demo.lance").is_dir()
