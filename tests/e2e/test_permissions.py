"""Files and directories the user may not read: reported with the system's reason, the rest indexed.

Root reads everything: when the tests run as root, the real `nvrag index` runs under util-linux's setpriv
without the two capabilities that let root ignore file permissions (CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH,
dropped from its bounding set), so permissions apply to it as to any user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
AS_A_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[Path]:
    corpus = tmp_path / "corpus"
    (corpus / "locked").mkdir(parents=True)
    (corpus / "good.txt").write_text("a readable document about search", encoding="utf-8")
    (corpus / "secret.txt").write_text("nobody may read this", encoding="utf-8")
    (corpus / "locked" / "inner.md").write_text("# Inside\n\nbehind a closed door", encoding="utf-8")
    (corpus / "secret.txt").chmod(0)
    (corpus / "locked").chmod(0)
    yield corpus
    (corpus / "locked").chmod(0o755)  # so that pytest can remove it


def test_unreadable_files_and_directories_are_reported_and_the_rest_is_indexed(corpus: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db))
    args = ["index", str(corpus), "--index", "t", "--model", "nvrag/fake-wordlen", "--json"]
    result = subprocess.run(
        [*AS_A_USER, sys.executable, "-m", "nvrag", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # 1: indexed, but some inputs failed
    report = json.loads(result.stdout)
    assert (report["documents"], report["chunks_added"]) == (1, 1)
    assert sorted((Path(f["source"]).name, f["reason"]) for f in report["failures"]) == [
        ("locked", "Permission denied; directory not read"),
        ("secret.txt", "Permission denied"),
    ]
    saved = json.loads((db / "t.report.json").read_text(encoding="utf-8"))
    assert saved["failures"] == report["failures"]

    again = subprocess.run(
        [*AS_A_USER, sys.executable, "-m", "nvrag", *args[:-1]], capture_output=True, text=True, env=env, check=False
    )
    assert again.returncode == 1
    assert f"skipped {corpus / 'secret.txt'}: Permission denied" in again.stderr.splitlines()
    assert f"skipped {corpus / 'locked'}: Permission denied; directory not read" in again.stderr.splitlines()
