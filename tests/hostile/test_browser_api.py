"""`nvrag serve` beside a browser: a page of another origin, opened in real Chromium, tries what the issue's
hostile client showed working (an auto-submitted text/plain form planting a document, a fetch that deletes one,
reading the indexes); and clients that trickle their bytes try to hold connections. Nothing is planted, deleted
or read, and the trickling connections are closed or answered 408."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from nvrag.store import LanceStore
from tests.e2e.test_ui_browser import CHROMIUM
from tests.hostile.another_origin import open_page

pytestmark = pytest.mark.slow
FAKE = "nvrag/fake-wordlen"


def attacker_page(api: str) -> str:
    """The hostile page: a form that posts JSON-looking text/plain to the documents route, a fetch that deletes
    a document (no-cors: the browser sends it without asking), and a fetch that tries to read the indexes."""
    return f"""<!doctype html><html><body>
<form id="plant" method="POST" enctype="text/plain" action="{api}/v1/indexes/demo/documents" target="sink">
<input name='[{{"id": "planted", "text": "spam", "title": "' value='"}}]'></form>
<iframe name="sink"></iframe>
<script>
window.results = {{}};
fetch("{api}/v1/indexes/demo/documents/hashlib.file_digest", {{method: "DELETE", mode: "no-cors"}})
  .then(() => window.results.deleted = "sent", e => window.results.deleted = "blocked");
fetch("{api}/v1/indexes").then(r => r.text()).then(t => window.results.read = t, e => window.results.read = "blocked");
fetch("{api}/v1/embeddings", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{model: "{FAKE}", input: "x"}})}}).then(() => window.results.embedded = "sent");
document.getElementById("plant").submit();
</script></body></html>"""


def test_a_page_of_another_origin_plants_deletes_and_reads_nothing(url: str, db: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install -y chromium); .ci/run installs it")
    before = LanceStore(str(db)).open("demo").count()
    requests_before = httpx.get(f"{url}/metrics").text
    sent = "window.results.read && window.results.deleted && window.results.embedded"
    results = open_page(attacker_page(url), tmp_path / "site", sent, settle_ms=1000)  # the form's navigation
    assert results["read"] == "blocked"  # no CORS: the page cannot read an answer
    table = LanceStore(str(db)).open("demo")
    assert table.count() == before
    ids = table.chunk_ids_by_doc()
    assert "planted" not in ids and "hashlib.file_digest" in ids
    after = httpx.get(f"{url}/metrics").text
    # the browser did send them: each was refused at the door (403 for the foreign origin)
    assert after.count('status="403"') > requests_before.count('status="403"')
    assert 'status="200"' not in "".join(
        line for line in after.splitlines() if "documents" in line and 'method="POST"' in line
    )


def test_connections_that_trickle_or_stall_are_closed_or_answered_408(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    silent = socket.create_connection((host, int(port)))  # sends nothing at all
    trickle = socket.create_connection((host, int(port)))
    trickle.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"model": "' + FAKE.encode()
    )  # a tenth of the body, then nothing
    started = time.monotonic()
    for sock in (silent, trickle, stalled):
        sock.settimeout(120)  # a guard against a hang, not a speed check
    assert silent.recv(1024) == b""  # closed by the server
    assert trickle.recv(1024) == b""
    answer = stalled.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 110
    for sock in (silent, trickle, stalled):
        sock.close()
    assert httpx.get(f"{url}/v1/models").status_code == 200  # and the server goes on
