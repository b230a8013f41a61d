"""`nvrag ui` as a hostile client sees it: no event accepts a file the client names instead of sending, the
source route serves only files recorded at index time, as inert text, and uploads are capped as they stream."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from nvrag.embedder import WordLengthEmbedder
from nvrag.indexer import Indexer, load_corpus
from nvrag.store import LanceStore
from tests.e2e.ui_server import running_ui

pytestmark = pytest.mark.slow
FILE_TYPES = {"file", "uploadbutton", "image", "audio", "video", "model3d", "gallery", "imageeditor", "dataset"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("alpha beta", encoding="utf-8")
    (corpus / "page.html").write_text(
        "<html><head><title>Page</title></head><body><p>gamma delta</p>"
        "<script>document.title = 'PWNED'; fetch('/source/t/x')</script></body></html>",
        encoding="utf-8",
    )
    Indexer(LanceStore(str(tmp_path / "db")), WordLengthEmbedder()).index("t", load_corpus(corpus))
    return tmp_path / "db"


def _events_taking_files(config: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    components = {c["id"]: c for c in config["components"]}
    found = []
    for dependency in config["dependencies"]:
        inputs = [components[i] for i in dependency["inputs"]]
        if any(c["type"] in FILE_TYPES for c in inputs):
            found.append((dependency, inputs))
    return found


def _run_event(client: httpx.Client, url: str, dependency: dict[str, Any], data: list[Any]) -> dict[str, Any]:
    session = uuid.uuid4().hex[:10]
    joined = client.post(
        f"{url}gradio_api/queue/join",
        json={
            "data": data,
            "event_data": None,
            "fn_index": dependency["id"],
            "trigger_id": dependency["targets"][0][0],
            "session_hash": session,
        },
    )
    assert joined.status_code == 200, joined.text
    with client.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return dict(message)
    raise AssertionError("the event never completed")


def test_no_event_accepts_a_server_path(db: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    token = f"secret-{uuid.uuid4().hex}"
    secret.write_text(f"{token} must never be readable through the UI", encoding="utf-8")
    received = tmp_path / "received"
    with running_ui(db, "t", GRADIO_TEMP_DIR=str(received)) as url, httpx.Client(timeout=60) as client:
        config = client.get(f"{url}config").json()
        events = _events_taking_files(config)
        assert events, "the page has an upload event"
        for dependency, inputs in events:
            for path in (str(secret), "/etc/passwd", "/dev/zero", f"{received}/../{secret.name}"):
                named = {"path": path, "orig_name": "notes.txt", "meta": {"_type": "gradio.FileData"}}
                data = [
                    [named]
                    if c["type"] in FILE_TYPES
                    else ("t" if c["type"] == "dropdown" else c["props"].get("value"))
                    for c in inputs
                ]
                done = _run_event(client, url, dependency, data)
                assert done["success"] is False, done  # Gradio refuses: "it was not uploaded by a user"
        for path in (str(secret), "/etc/passwd", str(db / "t.report.json"), str(Path.cwd() / "pyproject.toml")):
            assert client.get(f"{url}gradio_api/file={path}").status_code in (403, 404), path
        found = client.post(f"{url}gradio_api/queue/join", json={})  # the server still answers
        assert found.status_code in (200, 422)
    assert token not in " ".join(c.text for c in LanceStore(str(db)).open("t").get(_all_ids(db)))
    assert not (db / "uploads").exists()
    for folder, _, files in os.walk(tmp_path):
        for name in files:
            copy = Path(folder) / name
            if copy != secret and copy.is_file() and copy.stat().st_size < 2**20:
                assert token.encode() not in copy.read_bytes(), copy


def _all_ids(db: Path) -> list[str]:
    return sorted(c for ids in LanceStore(str(db)).open("t").chunk_ids_by_doc().values() for c in ids)


def _chunk_of(db: Path, name: str) -> str:
    grouped = LanceStore(str(db)).open("t").chunk_ids_by_doc()
    (chunk_id,) = grouped[name]
    return chunk_id


def test_sources_are_inert_text_and_only_while_they_resolve_as_indexed(db: Path, tmp_path: Path) -> None:
    page_id, note_id = _chunk_of(db, "page.html"), _chunk_of(db, "note.txt")
    with running_ui(db, "t") as url, httpx.Client(timeout=30) as client:
        page = client.get(f"{url}source/t/{page_id}")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/plain; charset=utf-8"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["content-security-policy"] == "sandbox; default-src 'none'"
        # an HTML source is shown as the text nvrag extracted from it: no markup, no script, even as text
        assert "gamma delta" in page.text and "<script" not in page.text and "PWNED" not in page.text
        assert client.get(f"{url}source/t/{note_id}").text == "alpha beta"
        note = tmp_path / "corpus" / "note.txt"
        note.unlink()
        note.symlink_to("/etc/passwd")  # swapped after indexing: the recorded path now resolves elsewhere
        assert client.get(f"{url}source/t/{note_id}").status_code == 404
        note.unlink()
        (tmp_path / "corpus" / "moved").mkdir()
        note.symlink_to(tmp_path / "corpus" / "moved" / "note.txt")
        (tmp_path / "corpus" / "moved" / "note.txt").write_text("alpha beta", encoding="utf-8")
        assert client.get(f"{url}source/t/{note_id}").status_code == 404
        note.unlink()
        os.mkfifo(note)  # the same path, now a pipe: refused without blocking the server
        assert client.get(f"{url}source/t/{note_id}").status_code == 404
        assert client.get(f"{url}source/t/{'0' * 32}").status_code == 404
        assert client.get(f"{url}source/t/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_uploads_are_capped_while_they_stream(db: Path, tmp_path: Path) -> None:
    received = tmp_path / "received"
    with running_ui(db, "t", GRADIO_TEMP_DIR=str(received)) as url, httpx.Client(timeout=120) as client:
        big = b"x" * (21 * 2**20)  # over the 20 MB upload limit
        response = client.post(f"{url}gradio_api/upload", files={"files": ("big.txt", big, "text/plain")})
        assert response.status_code == 413, response.text[:300]
        # a request declaring more than ten uploads' worth is refused before its body is read; one that will
        # not say how long it is, too
        assert _raw_post(url, "gradio_api/upload", {"Content-Length": str(11 * 20 * 2**20)}).startswith("HTTP/1.1 413")
        assert _raw_post(url, "gradio_api/upload", {"Transfer-Encoding": "chunked"}).startswith("HTTP/1.1 411")
        small = client.post(f"{url}gradio_api/upload", files={"files": ("ok.txt", b"fine", "text/plain")})
        assert small.status_code == 200
        (stored,) = small.json()
        assert Path(stored).resolve().is_relative_to(received.resolve())
    sizes = [p.stat().st_size for p in received.rglob("*") if p.is_file()]
    assert max(sizes, default=0) < 2**20


def _raw_post(url: str, path: str, headers: dict[str, str]) -> str:
    """The status line of a POST whose headers are sent as given (no client library corrects them)."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    lines = [f"POST /{path} HTTP/1.1", f"Host: {where.netloc}", "Content-Type: multipart/form-data; boundary=x"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((where.hostname, where.port), timeout=30) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"--x--")
        return conn.recv(200).decode("latin-1").splitlines()[0]


def test_other_host_names_and_pages_of_other_origins_are_refused(db: Path, tmp_path: Path) -> None:
    """DNS rebinding (a foreign name resolving to this machine: the Host header names it) and a page of another
    origin (Origin names it) reach nothing: no bytes written, no reads that Gradio's CORS would hand to any
    localhost page; the page's own origin, programs (no Origin) and the names a proxy was allowed still work."""
    received = tmp_path / "received"
    allowed = ("--allowed-host", "search.example", "--allowed-origin", "https://search.example")
    with running_ui(db, "t", *allowed, GRADIO_TEMP_DIR=str(received)) as url, httpx.Client(timeout=60) as client:
        own = url.rstrip("/")
        note = ("note.txt", b"planted by another page", "text/plain")

        def upload(**headers: str) -> int:
            return client.post(f"{url}gradio_api/upload", files={"files": note}, headers=headers).status_code

        for name in ("evil.example", "evil.example:7860", "127.0.0.1.nip.io"):
            assert client.get(url, headers={"Host": name}).status_code == 421, name
            assert client.get(f"{url}source/t/{_chunk_of(db, 'note.txt')}", headers={"Host": name}).status_code == 421
        for foreign in ("https://evil.example", "http://localhost:3000", "http://127.0.0.1:1", "null"):
            assert upload(Origin=foreign) == 403, foreign
            read = client.get(f"{url}config", headers={"Origin": foreign})
            assert read.status_code == 403 and "access-control-allow-origin" not in read.headers, foreign
        assert not [p for p in received.rglob("*") if p.is_file()]  # nothing the refused uploads sent was kept
        assert client.get(f"{url}config", headers={"Origin": own}).status_code == 200
        assert upload(Origin=own) == 200 and upload() == 200
        assert upload(Origin="https://search.example", Host="search.example") == 200
        assert client.get(url, headers={"Host": "search.example"}).status_code == 200


def test_a_full_queue_refuses_new_events_at_once(db: Path) -> None:
    """Events wait their turn in Gradio's queue, each listener one at a time; past MAX_QUEUED_EVENTS waiting a
    new one is refused at once (503), not queued without end. The upload run is held, for real, at the shared
    manifest lock that every index writer takes its turn at."""
    from nvrag.store.locking import shared_section
    from nvrag.ui.app import MAX_QUEUED_EVENTS

    with running_ui(db, "t") as url, httpx.Client(timeout=60) as client:
        config = client.get(f"{url}config").json()
        ((dependency, _),) = _events_taking_files(config)
        sent = client.post(f"{url}gradio_api/upload", files={"files": ("new.txt", b"epsilon", "text/plain")})
        (stored,) = sent.json()
        named = {"path": stored, "orig_name": "new.txt", "meta": {"_type": "gradio.FileData"}}

        def join(files: list[dict[str, Any]] | None) -> httpx.Response:
            body = {"data": ["t", files], "event_data": None, "fn_index": dependency["id"], "session_hash": "s"}
            return client.post(f"{url}gradio_api/queue/join", json={**body, "trigger_id": dependency["targets"][0][0]})

        with shared_section(db / "_nvrag_manifests.lock"):
            assert join([named]).status_code == 200  # runs, and waits at the lock with the upload's run
            answers = [join(None).status_code for _ in range(MAX_QUEUED_EVENTS + 3)]
        # the first event may still have been waiting to start when the others came: then it counted too
        assert answers.count(200) in (MAX_QUEUED_EVENTS - 1, MAX_QUEUED_EVENTS), answers
        assert set(answers[answers.count(200) :]) == {503}, answers
        deadline = time.monotonic() + 120
        while "upload:new" not in " ".join(LanceStore(str(db)).open("t").chunk_ids_by_doc()):
            assert time.monotonic() < deadline, "the held upload never finished once the lock was free"
            time.sleep(0.5)
