"""`nvrag serve --ui`: the web search page at /ui of the API server, behind the same key. A browser is asked
for it (HTTP Basic, the key as the password) and then searches and opens a source file through /ui."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.test_server import KEY, serve
from tests.conftest import DEMO_CORPUS
from tests.e2e.test_cli_e2e import nvrag
from tests.e2e.test_ui_browser import CHROMIUM, FLAGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def with_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("ui") / "db"
    built = nvrag("index", str(DEMO_CORPUS.parent), "--index", "demo", db=db)
    assert built.returncode == 0, built.stderr
    yield from serve(db, "--ui", "--api-key", KEY, "--index", "demo")


def test_the_page_asks_a_browser_for_the_key(with_ui: str) -> None:
    refused = httpx.get(f"{with_ui}/ui/")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith('Basic realm="nvrag"')
    assert httpx.get(f"{with_ui}/ui/", auth=("anyone", "wrong-key-0123456789")).status_code == 401
    assert httpx.get(f"{with_ui}/ui/", auth=("anyone", KEY)).status_code == 200
    api = httpx.get(f"{with_ui}/v1/models")
    assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"


def test_a_browser_with_the_key_searches_and_opens_a_source_file(with_ui: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        context = browser.new_context(http_credentials={"username": "me", "password": KEY})
        page = context.new_page()
        page.goto(f"{with_ui}/ui/", wait_until="load", timeout=120_000)
        box = page.locator("#query textarea, #query input").first
        box.wait_for(timeout=120_000)
        box.fill("compute a SHA-256 digest of a file")
        box.press("Enter")
        first = page.locator("[data-testid=hit]").first
        first.wait_for(timeout=120_000)
        assert first.get_attribute("data-doc-id") == "hashlib.file_digest"
        link = first.locator("a").first.get_attribute("href")
        assert link is not None and link.startswith("/ui/source/demo/")
        source = context.request.get(f"{with_ui}{link}")
        assert source.status == 200 and "file_digest" in source.text()
        assert source.headers["content-type"].startswith("text/plain")
        browser.close()


def test_a_page_of_another_origin_reads_nothing_of_the_page(with_ui: str) -> None:
    """Gradio answers a page on any localhost port with CORS; under /ui the API's guard refuses such a page
    before Gradio sees it, reads included (the API's own routes send no CORS headers at all)."""
    for origin in ("http://localhost:3000", "https://evil.example"):
        read = httpx.get(f"{with_ui}/ui/config", auth=("me", KEY), headers={"Origin": origin})
        assert read.status_code == 403 and "access-control-allow-origin" not in read.headers, origin
    own = httpx.get(f"{with_ui}/ui/config", auth=("me", KEY), headers={"Origin": with_ui})
    assert own.status_code == 200
