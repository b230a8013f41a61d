"""In a real browser (Debian's Chromium via Playwright): an indexed page with a script, its source link
clicked from the results, and no script runs; a hostile document's text shows as text in the results; a page
of another origin (another port of this machine) can neither upload to the UI nor read from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli_e2e import nvrag
from tests.e2e.test_ui_browser import CHROMIUM, FLAGS, ask
from tests.e2e.ui_server import running_ui
from tests.hostile.another_origin import open_page

pytestmark = pytest.mark.slow
PAGE = """<html><head><title>Owl facts</title></head><body>
<p>Owls hunt at night &amp; sleep by day.</p>
<script>document.title = "PWNED"; window.pwned = true; fetch("/pwned-" + document.cookie)</script>
<img src=x onerror="document.title='PWNED-IMG'">
</body></html>"""
NOTE = "Owl notes <script>window.pwned = true</script> [link=https://evil.example]click[/link] &quot; &amp;amp;"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xss")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[str]:
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "owls.html").write_text(PAGE, encoding="utf-8")
    (corpus / "note.txt").write_text(NOTE, encoding="utf-8")
    built = nvrag("index", str(corpus), "--index", "xss", "--model", "all-MiniLM-L6-v2", db=root / "db")
    assert built.returncode == 0, built.stderr
    with running_ui(root / "db", "xss", GRADIO_TEMP_DIR=str(root / "received")) as url:
        yield url


def test_an_indexed_pages_script_never_runs(server: str) -> None:
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        context = browser.new_context()
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        page.goto(server, wait_until="networkidle")
        ask(page, "when do owls hunt")
        hits = page.locator("[data-testid=hit]")
        hits.first.wait_for(timeout=180_000)
        card = page.locator("[data-testid=hit][data-doc-id='owls.html']")
        card.locator("summary").first.click()
        with context.expect_page() as opened:
            card.locator("a").click()
        source = opened.value
        source.wait_for_load_state("load")
        assert source.title() != "PWNED"
        body = source.inner_text("body")  # an HTML source is shown as the text nvrag extracted from it
        assert "Owls hunt at night" in body and "<script>" not in body
        assert source.evaluate("window.pwned === undefined")
        note = page.locator("[data-testid=hit][data-doc-id='note.txt'] .nvrag-text").first
        assert note.inner_text().startswith("Owl notes <script>window.pwned = true</script> [link=")
        assert page.evaluate("window.pwned === undefined") and page.title() != "PWNED"
        browser.close()
    assert not [url for url in requests if "pwned" in url.lower()]


def attacker_page(ui: str) -> str:
    """A page of another origin: a form upload sent without asking (no-cors: the browser does not wait for
    permission to send a multipart form), and reads of the page's settings and of a source file."""
    return f"""<!doctype html><html><body><script>
window.results = {{}};
const form = new FormData();
form.append("files", new Blob(["planted by another page"], {{type: "text/plain"}}), "planted.txt");
fetch("{ui}gradio_api/upload", {{method: "POST", mode: "no-cors", body: form}})
  .then(() => window.results.uploaded = "sent", e => window.results.uploaded = "blocked");
fetch("{ui}config").then(r => r.text()).then(t => window.results.read = t, e => window.results.read = "blocked");
</script></body></html>"""


def test_a_page_of_another_origin_neither_uploads_nor_reads(server: str, root: Path, tmp_path: Path) -> None:
    """Gradio alone answered a localhost page's reads with CORS (any port) and kept what any page's form
    uploaded; the UI's guard refuses both at the door."""
    results = open_page(attacker_page(server), tmp_path / "site", "window.results.read && window.results.uploaded")
    assert results["uploaded"] == "sent"  # the browser sent it: the server refused it
    assert results["read"] == "blocked"
    assert not [f for f in (root / "received").rglob("*") if f.is_file() and b"planted" in f.read_bytes()]
