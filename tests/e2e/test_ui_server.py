"""`nvrag ui` as a process: the page, the source-file route and its limits, the optional login."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer, load_corpus
from nvrag.store import LanceStore
from tests.e2e.ui_server import running_ui

pytestmark = pytest.mark.slow


def status(url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("alpha beta", encoding="utf-8")
    Indexer(LanceStore(str(tmp_path / "db")), WordLengthEmbedder()).index("t", load_corpus(corpus))
    return tmp_path / "db"


def test_page_and_indexed_sources_only(db: Path) -> None:
    (chunk_id,) = next(iter(LanceStore(str(db)).open("t").chunk_ids_by_doc().values()))
    with running_ui(db, "t") as url:
        assert status(url)[0] == 200
        assert status(f"{url}source/t/{chunk_id}") == (200, "alpha beta")
        assert status(f"{url}source/t/not-a-chunk")[0] == 404
        assert status(f"{url}source/nope/{chunk_id}")[0] == 404
        assert status(f"{url}source/t/..%2F..%2Fetc%2Fpasswd")[0] == 404


def test_login_from_the_environment(db: Path) -> None:
    (chunk_id,) = next(iter(LanceStore(str(db)).open("t").chunk_ids_by_doc().values()))
    with running_ui(db, "t", NVRAG_UI_USER="ann", NVRAG_UI_PASSWORD="secret") as url:
        assert status(f"{url}source/t/{chunk_id}")[0] == 404  # outside Gradio's login: switched off
        assert status(f"{url}login", {"username": "ann", "password": "wrong"})[0] >= 400
        assert status(f"{url}login", {"username": "ann", "password": "secret"})[0] == 200


def test_the_folder_that_receives_uploads_goes_with_the_server(db: Path, tmp_path: Path) -> None:
    """Gradio keeps the bytes it receives in a folder of the server's own; once the server stops, the folder
    is gone (146 of them had piled up in one machine's /tmp before), while the indexed uploads stay in the
    data directory."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    with running_ui(db, "t", TMPDIR=str(temp)):
        (received,) = temp.glob("nvrag-received-*")
        assert received.is_dir()
    assert list(temp.glob("nvrag-received-*")) == []
