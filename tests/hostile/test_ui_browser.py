"""In a real browser (Debian's Chromium via Playwright): an indexed page with a script, its source link
clicked from the results, and no script runs; a hostile document's text shows as text in the results."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_cli_e2e import nvrag
from tests.e2e.test_ui_browser import CHROMIUM, FLAGS, ask
from tests.e2e.ui_server import running_ui

pytestmark = pytest.mark.slow
PAGE = """<html><head><title>Owl facts</title></head><body>
<p>Owls hunt at night &amp; sleep by day.</p>
<script>document.title = "PWNED"; window.pwned = true; fetch("/pwned-" + document.cookie)</script>
<img src=x onerror="document.title='PWNED-IMG'">
</body></html>"""
NOTE = "Owl notes <script>window.pwned = true</script> [link=https://evil.example]click[/link] &quot; &amp;amp;"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("xss")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "owls.html").write_text(PAGE, encoding="utf-8")
    (corpus / "note.txt").write_text(NOTE, encoding="utf-8")
    built = nvrag("index", str(corpus), "--index", "xss", "--model", "all-MiniLM-L6-v2", db=root / "db")
    assert built.returncode == 0, built.stderr
    with running_ui(root / "db", "xss") as url:
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
