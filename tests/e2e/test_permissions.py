"""Files and directories the user may not read: reported with the system's reason, the rest indexed.

Root reads everything, so when the tests run as root the real `nvrag index` runs as the unprivileged user
`nobody` (subprocess's user/group), in a directory under the system temp dir that user can reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="nvrag-perm-"))
    root.chmod(0o777)
    yield root
    for folder, _, _ in os.walk(root):  # give access back so the directory can be removed
        os.chmod(folder, 0o777)
    shutil.rmtree(root)


def test_unreadable_files_and_directories_are_reported_and_the_rest_is_indexed(shared_dir: Path) -> None:
    corpus = shared_dir / "corpus"
    (corpus / "locked").mkdir(parents=True)
    (corpus / "good.txt").write_text("a readable document about search", encoding="utf-8")
    (corpus / "secret.txt").write_text("nobody may read this", encoding="utf-8")
    (corpus / "locked" / "inner.md").write_text("# Inside\n\nbehind a closed door", encoding="utf-8")
    (corpus / "secret.txt").chmod(0)
    (corpus / "locked").chmod(0)
    corpus.chmod(0o755)
    (corpus / "good.txt").chmod(0o644)
    db = shared_dir / "db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db), HOME=str(shared_dir), HF_HOME=str(shared_dir / "hf"))
    drop = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    args = ["index", str(corpus), "--index", "t", "--model", "nvrag/fake-wordlen", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "nvrag", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        **drop,  # type: ignore[arg-type]
    )
    assert result.returncode == 1, result.stderr  # 1: indexed, but some inputs failed
    report = json.loads(result.stdout)
    assert (report["documents"], report["chunks_added"]) == (1, 1)
    assert sorted((Path(f["source"]).name, f["reason"]) for f in report["failures"]) == [
        ("locked", "Permission denied; directory not read"),
        ("secret.txt", "Permission denied"),
    ]
    assert f"skipped {corpus / 'secret.txt'}: Permission denied" in result.stderr
    saved = json.loads((db / "t.report.json").read_text(encoding="utf-8"))
    assert saved["failures"] == report["failures"]
