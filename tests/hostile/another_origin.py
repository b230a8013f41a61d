"""A web page of another origin, opened in real Chromium: what the browser tests of the API and the UI use to
play the hostile page in the user's browser."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any

from tests.e2e.test_ui_browser import CHROMIUM, FLAGS


def open_page(html: str, folder: Path, ready: str, settle_ms: int = 0) -> dict[str, Any]:
    """Serve ``html`` from a server of its own (another port of this machine: another origin), open it in
    Chromium, wait until the JavaScript expression ``ready`` holds (then ``settle_ms`` more) and return the
    page's ``window.results``."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(html, encoding="utf-8")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
    page_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
            tab = browser.new_page()
            tab.goto(f"http://127.0.0.1:{page_server.server_address[1]}/index.html")
            tab.wait_for_function(ready)
            if settle_ms:
                tab.wait_for_timeout(settle_ms)
            results: dict[str, Any] = tab.evaluate("window.results")
            browser.close()
            return results
    finally:
        page_server.shutdown()
        page_server.server_close()
